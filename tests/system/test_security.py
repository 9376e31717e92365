"""Security and hostile input: managed API keys, tenant quotas, input limits, secrets
hygiene and the production profile — against real API and worker processes.

No worker runs in this module until the secrets test starts its own, so the jobs the
quota tests submit stay unfinished.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis

from config.production import production_problems, webhook_secret_problem
from config.settings import Settings
from core import keys
from core.signing import generate_secret
from producers.api import apikeys
from tests.support.procs import ROOT
from tests.support.receiver import Receiver
from tests.support.simulator import SimulatorHandle
from tests.support.stack import (
    assert_error,
    chat_body,
    stack_env_for,
    start_api,
    start_worker,
    wait_job,
)

pytest_plugins = ["tests.support.fixtures"]
pytestmark = pytest.mark.timeout(90)


def courier(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "producers.cli", *args]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def redis_dump(redis_url: str) -> str:
    """Every key and value in the test database, as text."""
    client = redis.Redis.from_url(redis_url)
    out: list[str] = []
    readers: dict[bytes, Any] = {
        b"string": client.get,
        b"hash": client.hgetall,
        b"list": lambda k: client.lrange(k, 0, -1),
        b"set": client.smembers,
        b"zset": lambda k: client.zrange(k, 0, -1),
    }
    for key in client.scan_iter(count=1000):
        reader = readers.get(client.type(key))  # type: ignore[arg-type]
        out.append(f"{key!r} {reader(key) if reader else ''!r}")
    client.close()
    return "\n".join(out)


# ---- managed API keys ---------------------------------------------------------------


def test_managed_keys_create_list_revoke(
    api_url: str, stack_env: dict[str, str], redis_client: redis.Redis
) -> None:
    created = courier("keys", "create", "--tenant", "managed", "--json", env=stack_env)
    assert created.returncode == 0, created.stderr
    info = json.loads(created.stdout)
    key, key_id = info["key"], info["id"]
    assert key.startswith(f"ck_{key_id}_") and len(base64.urlsafe_b64decode(key[16:] + "=")) >= 32

    plain = courier("keys", "create", "--tenant", "managed", env=stack_env)
    assert plain.returncode == 0 and plain.stdout.strip().startswith("ck_")
    assert "not shown again" in plain.stderr

    # stored as a SHA-256 digest, never as the key
    digest = apikeys.digest(key)
    assert redis_client.hget(keys.api_key(digest), "tenant") == "managed"
    assert key not in redis_dump(stack_env["COURIER_REDIS_URL"])

    with httpx.Client(base_url=api_url, headers=bearer(key), timeout=30) as client:
        job = client.post("/v1/jobs", json=chat_body("managed"))
        assert job.status_code == 202, job.text
        assert client.get(f"/v1/jobs/{job.json()['id']}").status_code == 200
        listed = courier("keys", "list", "--json", env=stack_env)
        assert listed.returncode == 0 and key not in listed.stdout
        row = next(r for r in json.loads(listed.stdout) if r["id"] == key_id)
        assert row["tenant"] == "managed" and row["revoked"] is None and row["created"]
        table = courier("keys", "list", env=stack_env).stdout
        assert key_id in table and key not in table

        revoked = courier("keys", "revoke", key_id, env=stack_env)
        assert revoked.returncode == 0, revoked.stderr
        # at once: nothing caches a key
        assert_error(client.get("/v1/jobs"), 401, "authentication")
        assert_error(client.post("/v1/jobs", json=chat_body("x")), 401)
        store = apikeys.ManagedKeys(redis_client)
        assert next(i for i in store.list() if i.id == key_id).revoked

    assert courier("keys", "revoke", "nosuchid", env=stack_env).returncode == 1
    assert_error(httpx.get(f"{api_url}/v1/jobs", headers=bearer(key[:-1] + "x")), 401)
    assert_error(httpx.get(f"{api_url}/v1/jobs", headers=bearer("ck_" + "0" * 60)), 401)
    with pytest.raises(ValueError, match="tenant"):
        store.create("a b")


# ---- tenant quotas and input limits (an API with low limits, no worker) -------------


@pytest.fixture(scope="module")
def limited_api(stack_env: dict[str, str]) -> Iterator[str]:
    env = {
        **stack_env,
        "COURIER_API_KEYS": "q:key-q,r:key-r,h:key-h",
        "COURIER_TENANT_MAX_UNFINISHED": "3",
        "COURIER_TENANT_SUBMIT_RATE": "0.1",
        "COURIER_TENANT_SUBMIT_BURST": "20",
        "COURIER_MAX_BODY_BYTES": "3000000",
        "COURIER_CALLBACK_REQUIRE_HTTPS": "true",
    }
    proc, url = start_api(env, name="api-limited")
    yield url
    proc.stop()


def test_unfinished_jobs_quota(limited_api: str, redis_client: redis.Redis) -> None:
    with httpx.Client(base_url=limited_api, headers=bearer("key-q"), timeout=30) as q:
        first = q.post("/v1/jobs", json=chat_body("q"), headers={"Idempotency-Key": "q-1"})
        assert first.status_code == 202, first.text
        for _ in range(2):
            assert q.post("/v1/jobs", json=chat_body("q")).status_code == 202
        over = q.post("/v1/jobs", json=chat_body("q"), headers={"Idempotency-Key": "q-4"})
        message = assert_error(over, 429, "quota_exceeded")
        assert "3 unfinished jobs" in message and "limit is 3" in message
        assert int(over.headers["Retry-After"]) >= 1
        # nothing stored: no fourth job, no idempotency record
        assert len(q.get("/v1/jobs").json()["jobs"]) == 3
        assert not redis_client.exists(keys.idempotency("q", "q-4"))
        # a replay is answered with the first job and does not count
        replay = q.post("/v1/jobs", json=chat_body("q"), headers={"Idempotency-Key": "q-1"})
        assert replay.status_code == 200 and replay.json()["id"] == first.json()["id"]
        assert redis_client.zcard(keys.tenant_unfinished("q")) == 3
        # a job that ends frees its place
        assert q.post(f"/v1/jobs/{first.json()['id']}/cancel").status_code == 200
        assert redis_client.zcard(keys.tenant_unfinished("q")) == 2
        assert q.post("/v1/jobs", json=chat_body("q")).status_code == 202


def test_submission_rate_limit(limited_api: str, redis_client: redis.Redis) -> None:
    with httpx.Client(base_url=limited_api, headers=bearer("key-r"), timeout=30) as r:
        same = {"Idempotency-Key": "r-same"}
        statuses = [r.post("/v1/jobs", json=chat_body("r"), headers=same).status_code]
        statuses += [r.post("/v1/jobs", json=chat_body("r")).status_code for _ in range(2)]
        statuses += [
            r.post("/v1/jobs", json=chat_body("r"), headers=same).status_code for _ in range(17)
        ]
        assert statuses == [202, 202, 202] + [200] * 17  # the burst of 20
        over = r.post("/v1/jobs", json=chat_body("r"), headers={"Idempotency-Key": "r-new"})
        message = assert_error(over, 429, "rate_limited")
        assert "0.1/s" in message and "burst 20" in message
        assert 1 <= int(over.headers["Retry-After"]) <= 10
        assert len(r.get("/v1/jobs").json()["jobs"]) == 3  # reads are not limited
        assert not redis_client.exists(keys.idempotency("r", "r-new"))


def test_each_input_limit_names_itself(limited_api: str) -> None:
    def messages(n: int, text: str = "x") -> dict[str, Any]:
        return {
            "model": "openai:m",
            "request": {"messages": [{"role": "user", "content": text}] * n},
        }

    embedding = {"model": "openai:e", "kind": "embedding"}
    cases: list[tuple[Any, dict[str, str], int, str]] = [
        (messages(1001), {}, 422, "1000"),
        (messages(1, "x" * 2_000_001), {}, 422, "the limit is 2000000"),
        (embedding | {"request": {"input": ["y" * 2_000_001]}}, {}, 422, "limit is 2000000"),
        (chat_body("x") | {"request": {"messages": [], "max_tokens": 200_001}}, {}, 422, "200000"),
        (chat_body("x", metadata={"k": "v" * 4100}), {}, 422, "the limit is 4096"),
        (chat_body("x", callback_url="https://a.example/" + "p" * 2100), {}, 422, "2048"),
        (chat_body("x", callback_url="http://a.example/hook"), {}, 422, "https://"),
        (chat_body("x", callback_url="https://a.example/\x01"), {}, 422, "control characters"),
        (chat_body("x"), {"Idempotency-Key": "k" * 256}, 422, "255"),
        (chat_body("x"), {"X-Filler": "f" * 17_000}, 431, "16384"),
    ]
    with httpx.Client(base_url=limited_api, headers=bearer("key-h"), timeout=30) as h:
        for body, headers, status, needle in cases:
            response = h.post("/v1/jobs", json=body, headers=headers)
            assert needle in assert_error(response, status), (needle, response.text[:300])
        huge = h.post("/v1/jobs", content=b"{" + b" " * 3_000_001 + b"}")
        assert "3000000 bytes" in assert_error(huge, 413, "payload_too_large")
        assert h.get("/v1/jobs").json() == {"jobs": []}


MESSAGE = '{"role": "user", "content": "x"}'


def raw_body(request: str = "", extra: str = "") -> str:
    request = request or f'{{"messages": [{MESSAGE}]}}'
    return f'{{"model": "openai:gpt-4o-mini", "request": {request}{extra}}}'


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        (raw_body(extra=', "metadata": {"a": NaN}'), "metadata.a is nan"),
        (raw_body(f'{{"messages": [{MESSAGE}], "top_p": Infinity}}'), "top_p is inf"),
        (raw_body('{"messages": [{"role": "user", "content": "\\ud800"}]}'), "surrogate"),
        (
            raw_body(extra=', "metadata": ' + '{"a": ' * 40 + "1" + "}" * 40),
            "deeper than the limit of 32",
        ),
    ],
)
def test_values_json_cannot_carry_are_refused(t1: httpx.Client, raw: str, needle: str) -> None:
    response = t1.post("/v1/jobs", content=raw, headers={"Content-Type": "application/json"})
    assert needle in assert_error(response, 422, "invalid_request")
    assert t1.get("/v1/jobs").status_code == 200  # the tenant's listing still renders


def test_idempotency_keys_are_scoped_per_tenant(t1: httpx.Client, t2: httpx.Client) -> None:
    key = {"Idempotency-Key": f"shared-{uuid.uuid4().hex}"}
    one = t1.post("/v1/jobs", json=chat_body("a"), headers=key)
    two = t2.post("/v1/jobs", json=chat_body("b"), headers=key)
    assert (one.status_code, two.status_code) == (202, 202)
    assert one.json()["id"] != two.json()["id"]
    assert t2.get(f"/v1/jobs/{one.json()['id']}").status_code == 404


# ---- the production profile -----------------------------------------------------------


def b64(raw: bytes) -> str:
    return "whsec_" + base64.b64encode(raw).decode()


def test_production_problems_each_named() -> None:
    def problems(environ: dict[str, str] | None = None, **values: Any) -> str:
        settings = Settings(profile="development", **values)
        return "\n".join(production_problems(settings, environ or {}, ["courier", "api"]))

    assert problems(webhook_secret=generate_secret()) == ""
    assert "COURIER_CALLBACK_ALLOW_PRIVATE" in problems(callback_allow_private=True)
    assert "COURIER_CALLBACK_REQUIRE_HTTPS" in problems(callback_require_https=False)
    assert "every byte the same" in problems(webhook_secret=b64(b"\0" * 32))
    assert "16 bytes" in problems(webhook_secret=b64(uuid.uuid4().bytes))
    assert "base64" in problems(webhook_secret="whsec_not base64!")
    assert "_PREVIOUS" in problems(webhook_secret_previous=b64(b"x" * 40))
    assert "FLOWER_BASIC_AUTH" in problems(flower=True)
    assert problems({"FLOWER_BASIC_AUTH": "ops:pw"}, flower=True) == ""
    flower_argv = ["/venv/bin/celery", "-A", "workers.app", "flower"]
    settings = Settings(profile="development")
    assert "Flower" in production_problems(settings, {}, flower_argv)[0]
    assert production_problems(settings, {}, [*flower_argv, "--basic_auth=ops:pw"]) == []
    python_m = ["/venv/lib/python3.11/site-packages/celery/__main__.py", "-A", "w", "flower"]
    assert production_problems(settings, {}, python_m)
    assert problems(webhook_secret="") == ""  # empty: the generated secret is used
    assert webhook_secret_problem(generate_secret()) is None

    assert Settings(profile="production").callbacks_need_https
    assert not Settings(profile="development").callbacks_need_https
    secret = b64(b"s" * 8)
    with pytest.raises(ValueError) as refused:
        Settings(profile="production", callback_allow_private=True, webhook_secret=secret)
    text = str(refused.value)
    assert "COURIER_CALLBACK_ALLOW_PRIVATE" in text and "COURIER_WEBHOOK_SECRET" in text
    assert secret not in text


def test_production_api_and_worker_refuse_unsafe_settings(stack_env: dict[str, str]) -> None:
    secret = b64(b"\x07" * 32)
    env = {
        **{k: v for k, v in stack_env.items() if not k.startswith("FLOWER_")},
        "COURIER_PROFILE": "production",
        "COURIER_API_KEYS": "",
        "COURIER_REDIS_URL": "redis://127.0.0.1:1/0",  # no managed keys to be found either
        "COURIER_CALLBACK_ALLOW_PRIVATE": "true",
        "COURIER_CALLBACK_REQUIRE_HTTPS": "false",
        "COURIER_WEBHOOK_SECRET": secret,
        "COURIER_FLOWER": "true",
    }
    api = courier("api", "--port", "1", env=env)
    assert api.returncode == 2, api.stderr
    for name in (
        "no API keys",
        "COURIER_CALLBACK_ALLOW_PRIVATE",
        "COURIER_CALLBACK_REQUIRE_HTTPS",
        "COURIER_WEBHOOK_SECRET has every byte the same",
        "FLOWER_BASIC_AUTH",
    ):
        assert name in api.stderr, (name, api.stderr)
    assert secret not in api.stderr and "Traceback" not in api.stderr
    worker = courier("worker", env=env)
    assert worker.returncode == 2 and "COURIER_CALLBACK_ALLOW_PRIVATE" in worker.stderr
    assert "no API keys" not in worker.stderr  # workers take no requests


def test_production_api_with_managed_key_only(
    stack_env: dict[str, str], redis_client: redis.Redis
) -> None:
    _, key = apikeys.ManagedKeys(redis_client).create("prod")
    env = {
        **stack_env,
        "COURIER_PROFILE": "production",
        "COURIER_API_KEYS": "",
        "COURIER_CALLBACK_ALLOW_PRIVATE": "false",
        "COURIER_WEBHOOK_SECRET": generate_secret(),
        "COURIER_JWT_SIGNING_KEYS": "k1:" + "s" * 48,  # production refuses to start without
    }
    proc, url = start_api(env, name="api-production")
    try:
        with httpx.Client(base_url=url, headers=bearer(key), timeout=30) as client:
            plain = client.post("/v1/jobs", json=chat_body("p", callback_url="http://a.example/"))
            assert "https://" in assert_error(plain, 422)
            private = client.post("/v1/jobs", json=chat_body("p", callback_url="https://10.1.2.3/"))
            assert "non-public" in assert_error(private, 422)
            assert client.post("/v1/jobs", json=chat_body("p")).status_code == 202
    finally:
        proc.stop()


# ---- secrets hygiene (runs last: it starts a worker) ------------------------------------


def test_secrets_never_reach_logs_records_or_metrics(
    redis_url: str, simulator: SimulatorHandle, redis_client: redis.Redis
) -> None:
    simulator.reset()
    tag = uuid.uuid4().hex
    openai_key, anthropic_key, api_key = (f"{p}-{tag}" for p in ("oai", "ant", "api"))
    webhook, previous = generate_secret(), generate_secret()
    _, managed = apikeys.ManagedKeys(redis_client).create("sec")
    env = {
        **stack_env_for(redis_url, simulator),
        "OPENAI_API_KEY": openai_key,
        "ANTHROPIC_API_KEY": anthropic_key,
        "COURIER_WEBHOOK_SECRET": webhook,
        "COURIER_WEBHOOK_SECRET_PREVIOUS": previous,
        "COURIER_API_KEYS": f"sec:{api_key}",
    }
    secrets = [openai_key, anthropic_key, api_key, managed]
    secrets += [s.removeprefix("whsec_") for s in (webhook, previous)]
    simulator.faults(
        [{"status": 401, "message": f"Incorrect API key provided: {openai_key} ({webhook})"}],
        match=f"auth {tag}",
    )
    simulator.faults(
        [{"status": 500, "message": f"upstream saw x-api-key: {anthropic_key}"}],
        match=f"boom {tag}",
    )
    api, url = start_api(env, name="api-secrets")
    worker = start_worker(env)
    try:
        with (
            Receiver() as receiver,
            httpx.Client(base_url=url, headers=bearer(api_key), timeout=30) as client,
        ):
            hook = receiver.url("/hook")
            submitted = [
                client.post("/v1/jobs", json=chat_body(f"fine {tag}", callback_url=hook)),
                client.post("/v1/jobs", json=chat_body(f"auth {tag}", callback_url=hook)),
                client.post(
                    "/v1/jobs",
                    json=chat_body(f"boom {tag}", "anthropic:claude-haiku-4-5", max_attempts=1),
                ),
            ]
            jobs = [wait_job(client, r.json()["id"]) for r in submitted]
            assert [j["status"] for j in jobs] == ["succeeded", "failed", "failed"], jobs
            assert jobs[1]["error"]["type"] == "authentication"
            for event in receiver.wait_for("/hook", 2):
                event.verify(webhook)
                event.verify(previous)
            assert client.get("/v1/jobs", headers=bearer(managed)).status_code == 200
            assert client.get("/v1/jobs", headers=bearer(api_key + "x")).status_code == 401
            metrics = httpx.get(f"{url}/metrics").text
    finally:
        api.stop()
        worker.stop(timeout=8)
    logs = worker.output()
    assert jobs[1]["id"] in logs and "authentication" in logs  # the worker did log them
    captured = {
        "API log": api.output(),
        "worker log": logs,
        "Redis (job records, queues)": redis_dump(redis_url),
        "/metrics": metrics,
        "job JSON": json.dumps(jobs),
    }
    for where, text in captured.items():
        for secret in secrets:
            assert secret not in text, f"a secret ({secret[:6]}…) is in the {where}"
