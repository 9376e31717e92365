"""Cost per job, budgets, usage and the answer cache end to end: the API and a worker as real
processes, real Redis, the simulator. Each test has tenants of its own (managed keys), so a
budget set here touches no other test."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import redis

from config.costs import TenantBudget
from core import keys
from core.cache import cache_digest
from core.cost.bound import bound, capped
from core.cost.ledger import Ledger
from core.cost.prices import PriceTable
from core.results import Usage
from producers.api.access.clients import OAuthClients
from producers.api.apikeys import ManagedKeys
from tests.support.access import as_token, fetch_token
from tests.support.procs import ROOT, Proc
from tests.support.simulator import SimulatorHandle
from tests.support.stack import assert_error, chat_body, paused, unique, wait_job

pytest_plugins = ["tests.support.fixtures"]
pytestmark = pytest.mark.timeout(60)

MINI = "openai:gpt-4o-mini"
DIRECTORY_S = 1.2  # a process learns of a new budget within a second
PRICES = PriceTable({})

Tenant = Callable[[], httpx.Client]


@pytest.fixture()
def ledger(redis_url: str) -> Iterator[Ledger]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield Ledger(client)
    client.close()


@pytest.fixture()
def tenant(redis_url: str, api_url: str) -> Iterator[Callable[[], tuple[str, httpx.Client]]]:
    """A new tenant with a managed key, and an HTTP client acting as it."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    opened: list[httpx.Client] = []

    def make() -> tuple[str, httpx.Client]:
        name = f"cost-{uuid.uuid4().hex[:10]}"
        _, key = ManagedKeys(client).create(name)
        http = httpx.Client(
            base_url=api_url, headers={"Authorization": f"Bearer {key}"}, timeout=30
        )
        opened.append(http)
        return name, http

    yield make
    for http in opened:
        http.close()
    client.close()


def cost_of(model: str, usage: dict[str, int]) -> float:
    price = PRICES.price(model)
    assert price is not None
    return price.cost_nano(Usage(usage["input_tokens"], usage["output_tokens"])) / 1e9


def worst_of(model: str, request: dict[str, Any]) -> float:
    price = PRICES.price(model)
    assert price is not None
    limits = bound(capped(request))
    return price.worst_nano(limits.input_tokens, limits.output_tokens) / 1e9


def calls_with(sim: SimulatorHandle, text: str) -> list[dict[str, Any]]:
    return [e for e in sim.log() if text in json.dumps(e)]


# ---- cost per job and usage ----------------------------------------------------------


def test_cost_from_usage_and_prices_and_the_usage_report(
    tenant: Any, sim: SimulatorHandle, worker: Proc
) -> None:
    _, http = tenant()
    submitted = http.post("/v1/jobs", json=chat_body(unique())).json()
    assert submitted["cost_usd"] == 0  # priced, nothing spent yet
    job = wait_job(http, submitted["id"])
    assert job["status"] == "succeeded", job
    expected = cost_of(MINI, job["result"]["usage"])
    assert expected > 0 and job["cost_usd"] == pytest.approx(expected, abs=1e-9)

    embedding = http.post(
        "/v1/jobs",
        json={"model": "openai:text-embedding-3-small", "kind": "embedding",
              "request": {"input": ["one", "two"]}},
    ).json()  # fmt: skip
    embedding = wait_job(http, embedding["id"])
    embedded = cost_of("openai:text-embedding-3-small", embedding["result"]["usage"])
    assert embedding["cost_usd"] == pytest.approx(embedded, abs=1e-9)

    report = http.get("/v1/usage", params={"period": "day"}).json()
    assert report["period"] == "day" and report["since"].endswith("T00:00:00.000Z")
    assert report["budget_usd"] is None and report["remaining_usd"] is None
    assert report["spent_usd"] == pytest.approx(expected + embedded, abs=1e-9)
    mini = report["by_model"][MINI]
    assert mini["jobs"] == 1 and mini["input_tokens"] == job["result"]["usage"]["input_tokens"]
    assert mini["spent_usd"] == pytest.approx(expected, abs=1e-9)
    assert http.get("/v1/usage").json()["period"] == "month"  # no budget: the month
    assert http.get("/v1/usage", params={"period": "total"}).json()["since"]
    assert_error(http.get("/v1/usage", params={"period": "week"}), 422, "invalid_request")


def test_a_failed_attempt_that_may_have_been_billed_counts(
    tenant: Any, sim: SimulatorHandle, worker: Proc
) -> None:
    """A call that timed out is charged at its worst case (the provider may have finished
    it), then the retry's true cost is added."""
    _, http = tenant()
    prompt = unique("slow")
    sim.faults([{"delay": 30}], match=prompt)
    body = chat_body(prompt, timeout_s=1)
    job = wait_job(http, http.post("/v1/jobs", json=body).json()["id"])
    assert job["status"] == "succeeded" and job["attempts"] == 2, job
    expected = worst_of(MINI, body["request"]) + cost_of(MINI, job["result"]["usage"])
    assert job["cost_usd"] == pytest.approx(expected, abs=1e-9)


def test_a_model_without_a_price_costs_null(
    tenant: Any, sim: SimulatorHandle, worker: Proc
) -> None:
    _, http = tenant()
    job = http.post("/v1/jobs", json=chat_body(unique(), "openai:house-model-7")).json()
    assert job["cost_usd"] is None
    job = wait_job(http, job["id"])
    assert job["status"] == "succeeded" and job["cost_usd"] is None
    usage = http.get("/v1/usage").json()["by_model"]["openai:house-model-7"]
    assert usage["spent_usd"] is None and usage["input_tokens"] > 0 and usage["jobs"] == 1


# ---- budgets -------------------------------------------------------------------------


def test_a_tenant_with_a_budget_runs_only_priced_models(tenant: Any, ledger: Ledger) -> None:
    name, http = tenant()
    ledger.set_budget(name, TenantBudget(usd=10, period="month"))
    time.sleep(DIRECTORY_S)
    message = assert_error(
        http.post("/v1/jobs", json=chat_body(unique(), "openai:house-model-7")), 422
    )
    assert "openai:house-model-7" in message and "price" in message
    fallback = chat_body(unique(), fallback_models=["anthropic:claude-haiku-4-5", "openai:nope"])
    assert "'openai:nope'" in assert_error(http.post("/v1/jobs", json=fallback), 422)
    batch = {"jobs": [chat_body(unique()), chat_body(unique(), "openai:nope")]}
    assert "jobs[1]" in assert_error(http.post("/v1/jobs/batch", json=batch), 422)


def test_submission_while_the_budget_is_spent_is_refused(
    tenant: Any, ledger: Ledger, sim: SimulatorHandle, worker: Proc
) -> None:
    name, http = tenant()
    body = chat_body(unique())
    first = wait_job(http, http.post("/v1/jobs", json=body).json()["id"])
    ledger.set_budget(name, TenantBudget(usd=first["cost_usd"], period="day"))  # now spent
    time.sleep(DIRECTORY_S)
    refused = http.post("/v1/jobs", json=chat_body(unique()))
    assert "does not fit" in assert_error(refused, 429, "budget_exceeded")
    assert 0 < int(refused.headers["Retry-After"]) <= 86400
    report = http.get("/v1/usage").json()
    assert report["period"] == "day" and report["remaining_usd"] == 0
    assert report["budget_usd"] == pytest.approx(first["cost_usd"])
    # a replay of an earlier submission is answered, not refused
    keyed = {"Idempotency-Key": "k-1"}
    ledger.remove_budget(name)
    time.sleep(DIRECTORY_S)
    original = http.post("/v1/jobs", json=chat_body(unique()), headers=keyed).json()
    ledger.set_budget(name, TenantBudget(usd=0, period="total"))
    time.sleep(DIRECTORY_S)
    replay = http.post("/v1/jobs", json=chat_body(unique()), headers=keyed)
    assert replay.status_code == 200 and replay.json()["id"] == original["id"]


def test_a_call_that_does_not_fit_fails_the_job_unretried(
    tenant: Any, ledger: Ledger, sim: SimulatorHandle, worker: Proc
) -> None:
    """Accepted while the budget had room; by the time a worker takes it, the budget was
    lowered (from the CLI): the job fails ``budget_exceeded`` without calling the provider."""
    name, http = tenant()
    ledger.set_budget(name, TenantBudget(usd=1, period="month"))
    time.sleep(DIRECTORY_S)
    prompt = unique()
    with paused(worker):
        job = http.post("/v1/jobs", json=chat_body(prompt)).json()
        assert job["status"] == "queued"
        done = courier("budgets", "set", "--tenant", name, "--usd", "0.000001", "--period",
                       "month", env=worker_env(ledger))  # fmt: skip
        assert done.returncode == 0, done.stderr
    job = wait_job(http, job["id"])
    assert job["status"] == "failed", job
    assert job["error"]["type"] == "budget_exceeded" and job["error"]["retryable"] is False
    assert "does not fit" in job["error"]["message"]
    assert job["attempts"] == 0 and job["cost_usd"] == 0
    assert calls_with(sim, prompt) == []


def courier(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "producers.cli", *args],
        cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True, timeout=30,
    )  # fmt: skip


def worker_env(ledger: Ledger) -> dict[str, str]:
    kwargs = ledger.redis.connection_pool.connection_kwargs
    return {"COURIER_REDIS_URL": f"redis://{kwargs['host']}:{kwargs['port']}/{kwargs['db']}"}


def test_budgets_cli(tenant: Any, ledger: Ledger) -> None:
    name, _ = tenant()
    env = worker_env(ledger)
    done = courier("budgets", "set", "--tenant", name, "--usd", "12.5", "--period", "day", env=env)
    assert done.returncode == 0 and "$12.5 per day" in done.stdout, done.stderr
    shown = json.loads(courier("budgets", "show", "--json", env=env).stdout)
    row = next(r for r in shown if r["tenant"] == name)
    assert (row["budget_usd"], row["period"], row["source"]) == (12.5, "day", "cli")
    assert row["remaining_usd"] == 12.5 and row["spent_usd"] == 0
    table = courier("budgets", "show", env=env).stdout
    assert re.search(rf"^{re.escape(name)}\s+day\s+12\.50", table, re.M), table
    bad = courier("budgets", "set", "--tenant", name, "--usd", "-1", "--period", "day", env=env)
    assert bad.returncode == 2 and "greater than or equal to 0" in bad.stderr
    bad = courier("budgets", "set", "--tenant", name, "--usd", "1", "--period", "week", env=env)
    assert bad.returncode == 2
    bad = courier("budgets", "set", "--tenant", "a|b", "--usd", "1", "--period", "day", env=env)
    assert bad.returncode == 2 and "tenant name refused" in bad.stderr
    assert courier("budgets", "remove", "--tenant", name, env=env).returncode == 0
    assert courier("budgets", "remove", "--tenant", name, env=env).returncode == 1
    assert name not in courier("budgets", "show", env=env).stdout


def test_bad_budgets_refuse_to_start(tenant: Any, ledger: Ledger) -> None:
    env = {**worker_env(ledger), "COURIER_BUDGETS": '{"t1": {"usd": -1, "period": "day"}}'}
    done = courier("worker", env=env)
    assert done.returncode == 2 and "budgets.t1.usd" in done.stderr, done.stderr


# ---- the answer cache ----------------------------------------------------------------


def test_cache_hit_no_provider_call_and_never_across_tenants(
    tenant: Any, sim: SimulatorHandle, worker: Proc, api_url: str
) -> None:
    _, a = tenant()
    _, b = tenant()
    prompt = unique("cached")
    body = chat_body(prompt, cache={"ttl_s": 600})
    first = wait_job(a, a.post("/v1/jobs", json=body).json()["id"])
    assert first["status"] == "succeeded" and first["result"].get("cached") is None

    hit = a.post("/v1/jobs", json=body)
    assert hit.status_code == 202
    job = hit.json()
    assert job["status"] == "succeeded" and job["result"]["cached"] is True
    assert job["cost_usd"] == 0 and job["attempts"] == 0
    assert job["result"]["output"] == first["result"]["output"]
    assert a.get(f"/v1/jobs/{job['id']}").json()["result"]["cached"] is True
    assert len(calls_with(sim, prompt)) == 1

    other = b.post("/v1/jobs", json=body).json()  # another tenant: its own provider call
    assert wait_job(b, other["id"])["result"].get("cached") is None
    assert len(calls_with(sim, prompt)) == 2
    changed = chat_body(prompt + "!", cache={"ttl_s": 600})  # another request: a miss
    changed_job = wait_job(a, a.post("/v1/jobs", json=changed).json()["id"])
    assert changed_job["result"].get("cached") is None

    metrics = httpx.get(f"{api_url}/metrics").text
    assert re.search(rf'courier_cache_lookups_total{{model="{MINI}",outcome="hit"}} [1-9]', metrics)
    assert 'courier_cost_usd_total{model="openai:gpt-4o-mini",tenant="cost-' in metrics


def test_cache_ttl_embeddings_and_bad_ttl(
    tenant: Any, sim: SimulatorHandle, worker: Proc, ledger: Ledger
) -> None:
    name, http = tenant()
    text = unique("embed")
    request = {"input": [text]}
    body = {"model": "openai:text-embedding-3-small", "kind": "embedding",
            "request": request, "cache": {"ttl_s": 60}}  # fmt: skip
    first = wait_job(http, http.post("/v1/jobs", json=body).json()["id"])
    assert first["status"] == "succeeded"
    hit = http.post("/v1/jobs", json=body).json()
    assert hit["result"]["cached"] is True
    assert hit["result"]["embeddings"] == first["result"]["embeddings"]
    # the answer is now 61 s old (its stored time moved back): older than ttl_s, a miss
    entry = keys.cache_entry(name, cache_digest(name, body["model"], "embedding", request))
    stored_at, _, answer = str(ledger.redis.get(entry)).partition("|")
    ledger.redis.set(entry, f"{int(stored_at) - 61_000}|{answer}", keepttl=True)
    miss = wait_job(http, http.post("/v1/jobs", json=body).json()["id"])
    assert miss["status"] == "succeeded" and not miss["result"].get("cached")
    assert len(calls_with(sim, text)) == 2
    longer = http.post("/v1/jobs", json={**body, "cache": {"ttl_s": 3600}}).json()
    assert longer["result"]["cached"] is True  # the miss stored its answer afresh
    for ttl in (0, 30 * 24 * 3600 + 1, "60", 1.5):
        bad = {**body, "cache": {"ttl_s": ttl}}
        assert "cache.ttl_s" in assert_error(http.post("/v1/jobs", json=bad), 422)


def test_budget_metrics(tenant: Any, ledger: Ledger, api_url: str) -> None:
    name, _ = tenant()
    ledger.set_budget(name, TenantBudget(usd=3, period="month"))
    metrics = httpx.get(f"{api_url}/metrics").text
    assert f'courier_budget_usd{{period="month",tenant="{name}"}} 3.0' in metrics
    assert f'courier_budget_remaining_usd{{period="month",tenant="{name}"}} 3.0' in metrics
    assert f'courier_budget_reserved_usd{{tenant="{name}"}} 0.0' in metrics


def test_cli_submit_with_cache_and_usage(
    tenant: Any, sim: SimulatorHandle, worker: Proc, api_url: str
) -> None:
    _, http = tenant()
    env = {"COURIER_API_URL": api_url, "COURIER_API_KEY": http.headers["Authorization"][7:]}
    prompt = unique("cli")
    args = ("submit", "--model", MINI, "--prompt", prompt, "--cache-ttl", "600", "--wait")
    first = courier(*args, env=env)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["cost_usd"] > 0
    again = json.loads(courier(*args, env=env).stdout)
    assert again["result"]["cached"] is True and again["cost_usd"] == 0
    report = courier("usage", "--period", "day", env=env)
    assert report.returncode == 0, report.stderr
    assert json.loads(report.stdout)["by_model"][MINI]["jobs"] == 1
    assert courier("usage", "--period", "week", env=env).returncode == 2


def test_usage_needs_the_usage_read_scope(redis_url: str, api_url: str) -> None:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    info, secret = OAuthClients(client).create(f"cost-{uuid.uuid4().hex[:8]}", "auditor")
    client.close()
    for scope, status in (("jobs:read", 403), ("usage:read", 200)):
        token = fetch_token(api_url, info.id, secret, scope=scope, address=21)
        with as_token(api_url, token["access_token"]) as http:
            answer = http.get("/v1/usage")
        assert answer.status_code == status, answer.text
    assert answer.json()["spent_usd"] == 0 and answer.json()["by_model"] == {}


def test_a_batch_takes_hits_from_the_cache_and_queues_the_rest(
    tenant: Any, sim: SimulatorHandle, worker: Proc
) -> None:
    _, http = tenant()
    body = chat_body(unique("batch"), cache={"ttl_s": 600})
    wait_job(http, http.post("/v1/jobs", json=body).json()["id"])
    answer = http.post("/v1/jobs/batch", json={"jobs": [body, chat_body(unique())]})
    assert answer.status_code == 202, answer.text
    hit, other = answer.json()["jobs"]
    assert hit["status"] == "succeeded" and hit["result"]["cached"] is True
    assert wait_job(http, other["id"])["result"].get("cached") is None
    replay = http.post(
        "/v1/jobs/batch", json={"jobs": [body, body]}, headers={"Idempotency-Key": "b-1"}
    ).json()["jobs"]
    again = http.post(
        "/v1/jobs/batch", json={"jobs": [body, body]}, headers={"Idempotency-Key": "b-1"}
    )
    assert again.status_code == 200 and [j["id"] for j in again.json()["jobs"]] == [
        j["id"] for j in replay
    ]
