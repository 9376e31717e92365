"""The audit log API against a real ``courier api`` (docs/contract.md, Access control):
what each action leaves,
auditors' queries (time, action, limit, newest first), tenant isolation, retention and the
bound on its length; ``courier clients`` and the production profile's signing-key check."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import redis
import redis.asyncio as aioredis

from core import keys
from producers.api.access.clients import OAuthClients
from producers.api.auditlog import AuditLog
from tests.support.access import access_env, as_token, bearer, fetch_token, forget_failures, source
from tests.support.procs import ROOT, wait_until
from tests.support.stack import KEY1, KEY2, assert_error, chat_body, start_api

FIELDS = {
    "request_id", "timestamp", "client_ip", "actor", "action", "status", "duration_ms", "job_id",
}  # fmt: skip


@pytest.fixture(scope="module")
def api(redis_url: str) -> Iterator[str]:
    forget_failures(redis_url)
    proc, url = start_api(access_env(redis_url), name="api-audit")
    yield url
    proc.stop()


@pytest.fixture()
def clients(redis_client: redis.Redis) -> OAuthClients:
    return OAuthClients(redis_client)


def auditor_of(api: str, clients: OAuthClients, tenant: str) -> httpx.Client:
    info, secret = clients.create(tenant, "auditor")
    return as_token(api, str(fetch_token(api, info.id, secret)["access_token"]))


def entries(auditor: httpx.Client, **params: Any) -> list[dict[str, Any]]:
    answer = auditor.get("/v1/audit", params=params)
    assert answer.status_code == 200, answer.text
    found: list[dict[str, Any]] = answer.json()["entries"]
    return found


def test_actions_land_in_the_callers_tenant_log(api: str, clients: OAuthClients) -> None:
    user, user_secret = clients.create("t1", "user")
    token = str(fetch_token(api, user.id, user_secret, address=61)["access_token"])
    with as_token(api, token) as t1:
        job = t1.post("/v1/jobs", json=chat_body("audited"), headers={"X-Request-ID": "x"})
        assert job.status_code == 202
        request_id = job.headers["x-request-id"]
        job_id = job.json()["id"]
        assert t1.post(f"/v1/jobs/{job_id}/cancel").status_code == 200
        assert_error(t1.get("/v1/audit"), 403, "forbidden")
    with httpx.Client(base_url=api, headers=bearer(KEY2), timeout=30) as t2:
        assert t2.post(f"/v1/jobs/{job_id}/cancel").status_code == 404  # not t2's job
    with httpx.Client(transport=source(62), timeout=30) as http:
        wrong = http.post(
            f"{api}/oauth/token",
            data={"grant_type": "client_credentials"},
            auth=(user.id, "cs_wrong"),
        )
        assert wrong.status_code == 401

    auditor = auditor_of(api, clients, "t1")
    mine = [e for e in entries(auditor, limit=1000) if e["actor"] == user.id]
    actions = [(e["action"], e["status"]) for e in mine]
    # newest first: the refused token request, the refused audit read, cancel, submit, token
    assert actions == [
        ("auth.denied", 401),
        ("auth.denied", 403),
        ("job.cancel", 200),
        ("job.submit", 202),
        ("auth.token", 200),
    ], actions
    submit = mine[3]
    assert set(submit) == FIELDS
    assert submit["request_id"] == request_id and submit["job_id"] == job_id
    assert submit["client_ip"] == "127.0.0.1" and submit["duration_ms"] >= 0
    assert mine[0]["client_ip"] == "127.0.0.62" and mine[4]["client_ip"] == "127.0.0.61"
    stamps = [e["timestamp"] for e in entries(auditor, limit=1000)]
    assert stamps == sorted(stamps, reverse=True)
    assert all(
        e["job_id"] != job_id or e["action"] != "job.cancel" or e["status"] == 200
        for e in entries(auditor, limit=1000)
    )  # fmt: skip  t2's 404 is not t1's

    t2_auditor = auditor_of(api, clients, "t2")
    t2_entries = entries(t2_auditor, limit=1000)
    assert all(e["actor"] != user.id for e in t2_entries)  # tenant isolation
    refused = [e for e in t2_entries if e["job_id"] == job_id]
    assert [(e["action"], e["status"]) for e in refused] == [("job.cancel", 404)]
    assert refused[0]["actor"].startswith("key:") and KEY2 not in json.dumps(t2_entries)
    auditor.close()
    t2_auditor.close()


def test_auditor_filters_by_time_action_and_limit(api: str, clients: OAuthClients) -> None:
    tenant = f"filters-{time.time_ns()}"
    user, secret = clients.create(tenant, "user")
    token = str(fetch_token(api, user.id, secret)["access_token"])
    with as_token(api, token) as http:
        first = [http.post("/v1/jobs", json=chat_body(f"f{i}")).json()["id"] for i in range(3)]
        time.sleep(0.05)
        middle = datetime.now(UTC)
        time.sleep(0.05)
        later = [http.post("/v1/jobs", json=chat_body(f"l{i}")).json()["id"] for i in range(2)]
        http.post(f"/v1/jobs/{later[0]}/cancel")
    auditor = auditor_of(api, clients, tenant)
    submits = entries(auditor, action="job.submit")
    assert [e["job_id"] for e in submits] == list(reversed(first + later))
    assert [e["job_id"] for e in entries(auditor, action="job.submit", limit=2)] == [
        later[1], later[0],
    ]  # fmt: skip
    assert [e["job_id"] for e in entries(auditor, action="job.submit", until=middle.isoformat())
            ] == list(reversed(first))  # fmt: skip
    since = entries(auditor, since=middle.isoformat(), action="job.*")
    assert [e["action"] for e in since] == ["job.cancel", "job.submit", "job.submit"]
    assert {e["action"] for e in entries(auditor, action="auth.*")} == {"auth.token"}
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert entries(auditor, since=future) == []
    assert_error(auditor.get("/v1/audit", params={"limit": 0}), 422)
    assert_error(auditor.get("/v1/audit", params={"action": "job submit"}), 422)
    assert "time zone" in assert_error(
        auditor.get("/v1/audit", params={"since": "2026-12-01T00:00:00"}), 422
    )
    assert_error(auditor.get("/v1/audit", params={"sinse": "x"}), 422)
    with httpx.Client(base_url=api, headers=bearer(KEY1), timeout=30) as key_user:
        assert_error(key_user.get("/v1/audit"), 403, "forbidden")
    auditor.close()


def test_retention_and_length_are_bounded(redis_url: str) -> None:
    asyncio.run(_retention_and_length(redis_url))


async def _retention_and_length(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    tenant = f"bounded-{time.time_ns()}"
    log = AuditLog(client, retention_s=3600, max_entries=100)
    try:
        old_ms = int(time.time() * 1000) - 2 * 3600 * 1000
        for i in range(5):  # entries from before the retention window
            await client.xadd(keys.audit(tenant), {"action": "job.submit", "status": "202"},
                              id=f"{old_ms + i}-0")  # fmt: skip
        assert await log.query(tenant) == []  # older than the retention: never answered
        entry = {"request_id": "r", "actor": "a", "action": "job.cancel", "status": 200}
        for _ in range(1000):
            await log.append(tenant, entry)
        length = await client.xlen(keys.audit(tenant))
        assert 100 <= length <= 200  # trimmed by whole nodes (100 entries each by default)
        found = await log.query(tenant, limit=1000)
        assert len(found) == length and {e["action"] for e in found} == {"job.cancel"}
        assert 0 < await client.ttl(keys.audit(tenant)) <= 3600
    finally:
        await client.delete(keys.audit(tenant))
        await client.aclose()


def courier(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "producers.cli", *args],
        cwd=ROOT, env={"PATH": "/usr/bin:/bin", **env}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_clients_cli_create_list_revoke(api: str, redis_url: str) -> None:
    env = {"COURIER_REDIS_URL": redis_url}
    tenant = f"cli-{time.time_ns()}"
    made = courier("clients", "create", "--tenant", tenant, "--role", "auditor", env=env)
    assert made.returncode == 0, made.stderr
    lines = dict(line.split(":", 1) for line in made.stdout.splitlines())
    client_id, secret = lines["client_id"].strip(), lines["client_secret"].strip()
    assert "not shown again" in made.stderr
    token = fetch_token(api, client_id, secret)
    assert token["scope"] == "jobs:read usage:read audit:read"
    listed = courier("clients", "list", "--tenant", tenant, "--json", env=env)
    rows = json.loads(listed.stdout)
    assert [(r["id"], r["role"], r["revoked"]) for r in rows] == [(client_id, "auditor", None)]
    assert secret not in listed.stdout
    revoked = courier("clients", "revoke", client_id, env=env)
    assert revoked.returncode == 0 and client_id in revoked.stdout
    with as_token(api, str(token["access_token"])) as http:
        wait_until(lambda: http.get("/v1/audit").status_code == 401, timeout=10)
    bad = courier("clients", "create", "--tenant", tenant, "--role", "root", env=env)
    assert bad.returncode == 2 and "role must be one of" in bad.stderr
    assert courier("clients", "revoke", "cli_nope", env=env).returncode == 1


def test_admin_manages_only_its_tenants_clients(api: str, clients: OAuthClients) -> None:
    admin, secret = clients.create("t1", "admin")
    other, _ = clients.create("t2", "user")
    with as_token(api, str(fetch_token(api, admin.id, secret)["access_token"])) as http:
        made = http.post("/v1/clients", json={"role": "auditor", "name": "ops"})
        assert made.status_code == 201, made.text
        created = made.json()
        assert created["tenant"] == "t1" and created["secret"].startswith("cs_")
        listed = http.get("/v1/clients").json()["clients"]
        assert created["id"] in [c["id"] for c in listed] and "secret" not in listed[0]
        assert {c["tenant"] for c in listed} == {"t1"}
        assert_error(http.delete(f"/v1/clients/{other.id}"), 404)
        assert_error(http.post("/v1/clients", json={"role": "root"}), 422)
        assert http.delete(f"/v1/clients/{created['id']}").json()["revoked"]
        assert fetch_token(api, admin.id, secret)  # the admin itself still works
    with httpx.Client(base_url=api, headers=bearer(KEY1), timeout=30) as key_user:
        assert_error(key_user.get("/v1/clients"), 403, "forbidden")


def test_production_refuses_to_start_without_a_signing_key(redis_url: str) -> None:
    from core.signing import generate_secret

    env = {
        "COURIER_REDIS_URL": redis_url,
        "COURIER_PROFILE": "production",
        "COURIER_API_KEYS": "t1:prod-key",
        "COURIER_WEBHOOK_SECRET": generate_secret(),
    }
    refused = courier("api", "--port", "1", env=env)
    assert refused.returncode == 2 and "COURIER_JWT_SIGNING_KEYS" in refused.stderr
    short = courier("api", "--port", "1", env={**env, "COURIER_JWT_SIGNING_KEYS": "k1:short"})
    assert short.returncode == 2 and "fewer than 32" in short.stderr
    assert "short" not in short.stderr.replace("fewer", "")  # the key itself is not printed
    key = courier("keys", "signing-key", env=env).stdout.strip()
    kid, _, secret = key.partition(":")
    assert kid and len(secret) >= 32
