"""The docs pages in a real browser (headless Debian Chromium) against a real
``courier api``, on a machine without internet: Swagger UI renders the operations from
locally served assets, and its Authorize button runs the OAuth2 client-credentials flow,
whose token then authenticates "Try it out"; ReDoc renders too."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from producers.api.access.clients import OAuthClients
from tests.support.access import access_env, forget_failures
from tests.support.browser import Browser, chromium_binary
from tests.support.stack import start_api

CHROMIUM = chromium_binary()
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium binary (apt-get install chromium)"
)


@pytest.fixture(scope="module")
def api(redis_url: str) -> Iterator[str]:
    forget_failures(redis_url)
    proc, url = start_api(access_env(redis_url), name="api-docs")
    yield url
    proc.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert CHROMIUM is not None
    with Browser(CHROMIUM) as browser:
        yield browser


def sent_elsewhere(browser: Browser, api: str) -> dict[str, str]:
    """Requests the pages sent anywhere but the API (none may leave: on a machine without
    internet they would fail; ReDoc's footer logo is refused by the page's CSP)."""
    leaving = browser.requests_leaving(api)
    return {url: end for url, end in leaving.items() if end != "blocked:csp"}


def test_swagger_ui_renders_offline(api: str, browser: Browser, tmp_path: Path) -> None:
    browser.goto(f"{api}/docs")
    count = browser.wait_for("document.querySelectorAll('.opblock').length >= 8 && "
                             "document.querySelectorAll('.opblock').length")  # fmt: skip
    paths = browser.evaluate(
        "[...document.querySelectorAll('.opblock-summary-path')].map(e => e.innerText)"
    )
    assert {"/v1/jobs", "/oauth/token", "/v1/audit", "/v1/clients"} <= {
        p.replace("\u200b", "") for p in paths
    }, paths
    assert count >= 8
    assert browser.evaluate("!!document.querySelector('.btn.authorize')")
    assert sent_elsewhere(browser, api) == {}
    browser.screenshot(tmp_path / "docs.png")


def test_authorize_runs_client_credentials(
    api: str, browser: Browser, redis_client: redis.Redis
) -> None:
    info, secret = OAuthClients(redis_client).create("t1", "user", "swagger")
    browser.goto(f"{api}/docs")
    browser.wait_for("!!document.querySelector('.btn.authorize')")
    browser.evaluate("document.querySelector('.btn.authorize').click()")
    browser.wait_for("!!document.querySelector('input[data-name=\"clientId\"]')")
    browser.type_into('input[data-name="clientId"]', info.id)
    browser.type_into('input[data-name="clientSecret"]', secret)
    oauth_box = (
        "[...document.querySelectorAll('.auth-container')]"
        ".find(c => c.innerText.includes('clientCredentials'))"
    )
    browser.evaluate(f"{oauth_box}.querySelector('button.authorize').click()")
    status = browser.wait_for(
        f"(b => b && (b.innerText.includes('Logout') || b.querySelector('.errors')) && "
        f"b.innerText)({oauth_box})"
    )
    assert "Logout" in status and "Authorized" in status, status
    browser.evaluate("document.querySelector('.modal-ux .btn-done, .modal-ux .close-modal')"
                     ".click()")  # fmt: skip

    operation = "#operations-jobs-list_jobs_v1_jobs_get"
    browser.evaluate(f"document.querySelector('{operation} .opblock-summary-control').click()")
    browser.wait_for(f"!!document.querySelector('{operation} .try-out__btn')")
    browser.evaluate(f"document.querySelector('{operation} .try-out__btn').click()")
    browser.wait_for(f"!!document.querySelector('{operation} .execute')")
    browser.evaluate(f"document.querySelector('{operation} .execute').click()")
    status_cell = f"{operation} .live-responses-table tr.response .response-col_status"
    code = browser.wait_for(
        f"(e => e && e.innerText.trim())(document.querySelector('{status_cell}'))"
    )
    assert code.startswith("200"), code
    curl = browser.evaluate(f"document.querySelector('{operation} .curl-command').innerText")
    assert "Authorization: Bearer eyJ" in curl, curl
    body = browser.evaluate(
        f"document.querySelector('{operation} .live-responses-table .microlight').innerText"
    )
    assert "jobs" in json.loads(body)


def test_redoc_renders_offline(api: str, browser: Browser) -> None:
    browser.goto(f"{api}/redoc")
    browser.wait_for("document.body.innerText.includes('Get an access token')")
    assert browser.evaluate("document.body.innerText.includes('Submit a job')")
    assert sent_elsewhere(browser, api) == {}
