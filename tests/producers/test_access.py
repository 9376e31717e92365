"""OAuth2 client credentials against a real ``courier api`` (docs/contract.md, Access
control): tokens fetched by a
third-party OAuth2 client (Authlib) with HTTP Basic and with form fields, RFC 6749 errors,
scopes and roles, bad tokens, key rotation, revocation, failed-request limits."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Iterator

import httpx
import httpx2
import jwt
import pytest
import redis
from authlib.integrations.httpx_client import OAuth2Client, OAuthError

from producers.api.access.clients import OAuthClients
from tests.support.access import (
    FAILURES_PER_ADDRESS,
    FAILURES_PER_CLIENT,
    KEYS,
    REVOCATION_CHECK_S,
    SIGNING,
    access_env,
    as_token,
    bearer,
    fetch_token,
    forget_failures,
    mint,
    source,
)
from tests.support.procs import wait_until
from tests.support.stack import KEY1, assert_error, chat_body, start_api


@pytest.fixture(scope="module")
def api(redis_url: str) -> Iterator[str]:
    forget_failures(redis_url)
    proc, url = start_api(access_env(redis_url), name="api-access")
    yield url
    proc.stop()


@pytest.fixture()
def clients(redis_client: redis.Redis) -> OAuthClients:
    return OAuthClients(redis_client)


@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post"])
def test_authlib_fetches_a_token_and_calls_the_api(
    api: str, clients: OAuthClients, method: str
) -> None:
    info, secret = clients.create("t1", "user", "authlib")
    with OAuth2Client(
        info.id, secret, token_endpoint_auth_method=method, scope="jobs:read jobs:write"
    ) as oauth:
        token = oauth.fetch_token(f"{api}/oauth/token", grant_type="client_credentials")
        assert token["token_type"] == "Bearer" and token["expires_in"] == 3600
        assert token["scope"] == "jobs:write jobs:read"
        job = oauth.post(f"{api}/v1/jobs", json=chat_body("via authlib"))
        assert job.status_code == 202, job.text
        listed = oauth.get(f"{api}/v1/jobs").json()["jobs"]
        assert job.json()["id"] in [j["id"] for j in listed]

    header = jwt.get_unverified_header(token["access_token"])
    assert header == {"alg": "HS256", "kid": "new", "typ": "JWT"}  # the first key signs
    claims = jwt.decode(
        token["access_token"], KEYS["new"], algorithms=["HS256"], audience="courier-api"
    )
    assert claims["iss"] == "courier" and claims["exp"] - claims["iat"] == 3600
    assert (claims["sub"], claims["client_id"]) == (info.id, info.id)
    assert (claims["tenant"], claims["role"]) == ("t1", "user")


def test_token_errors_follow_rfc_6749(api: str, clients: OAuthClients) -> None:
    info, secret = clients.create("t1", "user")
    url = f"{api}/oauth/token"
    grant = {"grant_type": "client_credentials"}
    with httpx.Client(transport=source(21), timeout=30) as http:

        def error(answer: httpx.Response, status: int, code: str) -> httpx.Response:
            assert answer.status_code == status, answer.text
            assert answer.json()["error"] == code and answer.json()["error_description"]
            assert answer.headers["cache-control"] == "no-store"
            return answer

        error(http.post(url, data={}, auth=(info.id, secret)), 400, "invalid_request")
        error(http.post(url, json=grant, auth=(info.id, secret)), 400, "invalid_request")
        twice = "grant_type=client_credentials&grant_type=client_credentials"
        form = {"content-type": "application/x-www-form-urlencoded"}
        error(http.post(url, content=twice, headers=form, auth=(info.id, secret)), 400,
              "invalid_request")  # fmt: skip
        both = {**grant, "client_id": info.id, "client_secret": secret}
        error(http.post(url, data=both, auth=(info.id, secret)), 400, "invalid_request")
        password = {"grant_type": "password", "username": "a", "password": "b"}
        error(http.post(url, data=password, auth=(info.id, secret)), 400, "unsupported_grant_type")

    with httpx.Client(transport=source(24), timeout=30) as http:
        basic = error(http.post(url, data=grant, auth=(info.id, "cs_wrong")), 401, "invalid_client")
        assert basic.headers["www-authenticate"].startswith("Basic")
        posted = {**grant, "client_id": info.id, "client_secret": "cs_wrong"}
        error(http.post(url, data=posted), 401, "invalid_client")
        error(http.post(url, data=grant), 401, "invalid_client")  # no client authentication

    with httpx.Client(transport=source(22), timeout=30) as http:
        for scope in ("admin", "jobs:read nonsense"):
            answer = http.post(url, data={**grant, "scope": scope}, auth=(info.id, secret))
            error(answer, 400, "invalid_scope")
        ok = http.post(url, data={**grant, "scope": "jobs:read"}, auth=(info.id, secret))
        assert ok.status_code == 200 and ok.json()["scope"] == "jobs:read"
        assert ok.headers["cache-control"] == "no-store" and ok.headers["pragma"] == "no-cache"

    # Authlib runs on httpx2 (pydantic's httpx fork) when it is installed, as here
    from_23 = httpx2.HTTPTransport(local_address="127.0.0.23")
    with (
        OAuth2Client(info.id, "cs_wrong", transport=from_23) as oauth,
        pytest.raises(OAuthError) as refused,
    ):
        oauth.fetch_token(url, grant_type="client_credentials")
    assert refused.value.error == "invalid_client"


def test_roles_and_scopes_on_every_route(api: str, clients: OAuthClients) -> None:
    def token_of(role: str, scope: str | None = None) -> str:
        info, secret = clients.create("t1", role)
        return str(fetch_token(api, info.id, secret, scope)["access_token"])

    user, auditor, admin = token_of("user"), token_of("auditor"), token_of("admin")
    reader = token_of("user", "jobs:read")
    routes = [
        ("POST", "/v1/jobs", "jobs:write"),
        ("GET", "/v1/jobs", "jobs:read"),
        ("GET", "/v1/audit", "audit:read"),
        ("GET", "/v1/clients", "admin"),
    ]
    allowed = {
        user: {"jobs:write", "jobs:read"},
        KEY1: {"jobs:write", "jobs:read"},  # an API key acts as role user
        auditor: {"jobs:read", "audit:read"},
        admin: {"jobs:write", "jobs:read", "audit:read", "admin"},
        reader: {"jobs:read"},
    }
    for credential, scopes in allowed.items():
        with as_token(api, credential) as http:
            for method, path, scope in routes:
                body = chat_body("scoped") if method == "POST" else None
                answer = http.request(method, path, json=body)
                if scope in scopes:
                    assert answer.status_code in (200, 202), (scope, answer.text)
                    continue
                assert scope in assert_error(answer, 403, "forbidden")
                assert 'error="insufficient_scope"' in answer.headers["www-authenticate"]


def test_missing_expired_and_tampered_tokens_get_401(api: str, clients: OAuthClients) -> None:
    info, secret = clients.create("t1", "user")
    good = str(fetch_token(api, info.id, secret)["access_token"])
    head, payload, signature = good.split(".")
    claims = jwt.decode(good, options={"verify_signature": False})
    forged = base64.urlsafe_b64encode(json.dumps({**claims, "tenant": "t2"}).encode()).rstrip(b"=")
    flipped = signature[:-2] + ("AA" if signature[-2:] != "AA" else "BB")
    bad = {
        "no credential": None,
        "tampered payload": f"{head}.{forged.decode()}.{signature}",
        "tampered signature": f"{head}.{payload}.{flipped}",
        "expired": mint(sub=info.id, client_id=info.id, iat=1, exp=int(time.time()) - 60),
        "unknown key": mint(key="rogue-key-" + "x" * 40, sub=info.id, client_id=info.id),
        "another audience": mint(aud="elsewhere", sub=info.id, client_id=info.id),
        "scope beyond role": mint(scope="admin", sub=info.id, client_id=info.id),
        "alg none": jwt.encode({**claims}, None, algorithm="none"),
        "garbage": "eyJ.not.a-token",
    }
    for why, token in bad.items():
        headers = bearer(token) if token else {}
        answer = httpx.get(f"{api}/v1/jobs", headers=headers, timeout=30)
        assert_error(answer, 401, "authentication")
        assert answer.headers["www-authenticate"].startswith("Bearer"), why
        if token:
            assert 'error="invalid_token"' in answer.headers["www-authenticate"], why
    assert (
        "expired"
        in httpx.get(f"{api}/v1/jobs", headers=bearer(bad["expired"] or ""), timeout=30).json()[
            "error"
        ]["message"]
    )
    with as_token(api, good) as http:
        assert http.get("/v1/jobs").status_code == 200


def test_rotation_keeps_old_tokens_valid(api: str, clients: OAuthClients, redis_url: str) -> None:
    info, secret = clients.create("t1", "user")
    old = mint("old", sub=info.id, client_id=info.id)  # signed before the rotation
    with as_token(api, old) as http:
        assert http.get("/v1/jobs").status_code == 200
    issued_here = str(fetch_token(api, info.id, secret)["access_token"])
    # Rotate: a newer key first, "new" kept for its tokens, "old" retired.
    rotated = f"newer:{'n' * 48},{SIGNING.split(',')[0]}"
    proc, url = start_api(
        access_env(redis_url, COURIER_JWT_SIGNING_KEYS=rotated), name="api-rotated"
    )
    try:
        with as_token(url, issued_here) as http:
            assert http.get("/v1/jobs").status_code == 200
        with as_token(url, old) as http:
            assert "unknown key" in assert_error(http.get("/v1/jobs"), 401)
        fresh = str(fetch_token(url, info.id, secret)["access_token"])
        assert jwt.get_unverified_header(fresh)["kid"] == "newer"
    finally:
        proc.stop()


def test_revoking_a_client_fails_its_tokens_within_the_bound(
    api: str, clients: OAuthClients
) -> None:
    admin, admin_secret = clients.create("t1", "admin")
    victim, secret = clients.create("t1", "user", "to revoke")
    token = str(fetch_token(api, victim.id, secret)["access_token"])
    with as_token(api, token) as http:
        assert http.get("/v1/jobs").status_code == 200
        admin_token = str(fetch_token(api, admin.id, admin_secret)["access_token"])
        revoked = httpx.delete(
            f"{api}/v1/clients/{victim.id}", headers=bearer(admin_token), timeout=30
        )
        assert revoked.status_code == 200 and revoked.json()["revoked"]
        started = time.monotonic()
        wait_until(lambda: http.get("/v1/jobs").status_code == 401, timeout=10)
        assert time.monotonic() - started < REVOCATION_CHECK_S + 5
        assert "revoked" in assert_error(http.get("/v1/jobs"), 401)
    with httpx.Client(transport=source(31), timeout=30) as other:
        again = other.post(
            f"{api}/oauth/token",
            data={"grant_type": "client_credentials"},
            auth=(victim.id, secret),
        )
    assert again.status_code == 401 and again.json()["error"] == "invalid_client"


def test_failed_token_requests_are_rate_limited(api: str, clients: OAuthClients) -> None:
    info, secret = clients.create("t1", "user")
    url, grant = f"{api}/oauth/token", {"grant_type": "client_credentials"}
    # per client id: from several addresses, the right secret is refused after the limit
    for n in range(FAILURES_PER_CLIENT):
        with httpx.Client(transport=source(40 + n), timeout=30) as http:
            assert http.post(url, data=grant, auth=(info.id, "cs_guess")).status_code == 401
    with httpx.Client(transport=source(50), timeout=30) as http:
        limited = http.post(url, data=grant, auth=(info.id, secret))
    assert limited.status_code == 429 and limited.json()["error"] == "rate_limited"
    assert 0 < int(limited.headers["retry-after"]) <= 120

    # per address: unknown client ids, then a good client from the same address
    other, other_secret = clients.create("t1", "user")
    with httpx.Client(transport=source(51), timeout=30) as http:
        for n in range(FAILURES_PER_ADDRESS):
            guess = http.post(url, data=grant, auth=(f"cli_{n:020x}", "cs_guess"))
            assert guess.status_code == 401
        blocked = http.post(url, data=grant, auth=(other.id, other_secret))
    assert blocked.status_code == 429 and int(blocked.headers["retry-after"]) > 0
    assert fetch_token(api, other.id, other_secret, address=52)["access_token"]


def test_python_client_fetches_and_refreshes_its_token(
    api: str, clients: OAuthClients, redis_client: object
) -> None:
    from producers.client import Courier, CourierAPIError

    info, secret = clients.create("t1", "user")
    with Courier(api, client_id=info.id, client_secret=secret) as courier:
        job = courier.submit("openai:gpt-4o-mini", prompt="client credentials")
        assert courier.get(job["id"])["id"] == job["id"]
        auth = courier.auth
        assert auth is not None and auth.token
        first = auth.token
        auth.expires_at = 0.0  # as if it were about to expire: the next call fetches anew
        courier.list()
        assert auth.token and auth.token != first
        auth.token = mint(sub=info.id, client_id=info.id, exp=int(time.time()) - 120)
        auth.expires_at = time.monotonic() + 600  # a token the API refuses: one retry
        assert courier.list()
        assert auth.token and jwt.get_unverified_header(auth.token)["kid"] == "new"
    with (
        Courier(api, client_id=info.id, client_secret="cs_wrong") as wrong,
        pytest.raises(CourierAPIError) as refused,
    ):
        wrong.list()
    assert (refused.value.status, refused.value.type) == (401, "invalid_client")


def test_async_client_as_an_oauth2_client(api: str, clients: OAuthClients) -> None:
    from producers.client import AsyncCourier, CourierAPIError

    info, secret = clients.create("t1", "auditor")

    async def scenario() -> tuple[int, str]:
        async with AsyncCourier(api, client_id=info.id, client_secret=secret) as courier:
            jobs = await courier.list()
            try:
                await courier.submit("openai:gpt-4o-mini", prompt="an auditor may not")
            except CourierAPIError as exc:
                return len(jobs), exc.type
        return len(jobs), "submitted"

    listed, refusal = asyncio.run(scenario())
    assert listed >= 0 and refusal == "forbidden"
