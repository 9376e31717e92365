"""The fair order between tenants (core/fair.py, core/fair_scripts.py): the intake's take
against real Redis, with the messages Celery's producer writes, no worker."""

from __future__ import annotations

import fnmatch
import json
import os
import subprocess
import sys
import uuid
from collections import Counter

import pytest
import redis

from config.settings import ModelLimit, Settings
from core import keys
from core.fair import FairSettle, FairTake, glob_to_lua, held
from producers.api.fair_metrics import FairCollector
from producers.api.queue_position import queue_position
from tests.support.jobs import DirectProducer, chat

pytest_plugins = ["tests.support.fixtures"]

QUEUES = ["jobs.high", "jobs.normal", "jobs.low"]


def tenants(n: int = 2) -> list[str]:
    tag = uuid.uuid4().hex[:6]
    return [f"t{i}-{tag}" for i in range(n)]


def start_all(take: FairTake, limit: int = 10_000) -> list[str]:
    """Job ids in the order the intake starts them, until nothing waits."""
    started = []
    while len(started) < limit and (taken := take.take(QUEUES, "tok", 30)) is not None:
        if taken.claim.status == "claimed":
            started.append(taken.job_id)
    return started


def test_a_small_tenant_waits_for_its_share_not_the_backlog(producer: DirectProducer) -> None:
    big, small = tenants()
    backlog = [producer.submit(f"big {i}", tenant=big) for i in range(300)]
    few = [producer.submit(f"small {i}", tenant=small) for i in range(5)]
    order = start_all(FairTake(producer.redis))
    assert sorted(order) == sorted(backlog + few)
    # Alternating from the moment the small tenant's messages are sorted (one take sorts 256).
    last_small = max(order.index(j) for j in few)
    assert last_small < 256 + 2 * len(few), last_small
    take = FairTake(producer.redis)
    first = [producer.submit(f"big again {i}", tenant=big) for i in range(20)]
    then = [producer.submit(f"small again {i}", tenant=small) for i in range(3)]
    order = start_all(take)
    assert max(order.index(j) for j in then) <= 2 * len(then)
    assert order[-1] in first


def test_weights_share_the_starts(producer: DirectProducer) -> None:
    heavy, light = tenants()
    take = FairTake(producer.redis, weights={heavy: 3, light: 1})
    owner = {}
    for i in range(200):
        owner[producer.submit(f"h {i}", tenant=heavy)] = heavy
        owner[producer.submit(f"l {i}", tenant=light)] = light
    order = start_all(take, limit=200)
    shares = Counter(owner[j] for j in order)
    assert shares[heavy] == 150 and shares[light] == 50


def test_priority_stays_strict_across_tenants(producer: DirectProducer) -> None:
    a, b, c = tenants(3)
    normal = [producer.submit(f"n {i}", tenant=a) for i in range(30)]
    low = producer.submit("low", tenant=b, priority="low")
    high = producer.submit("high", tenant=c, priority="high")
    order = start_all(FairTake(producer.redis))
    assert order[0] == high and order[-1] == low and order[1:-1] == normal


def test_tokens_are_the_cost_where_a_tpm_limit_applies(producer: DirectProducer) -> None:
    long_prompts, short_prompts = tenants()
    owner = {}
    for i in range(100):
        owner[producer.submit("x" * 4000 + str(i), tenant=long_prompts, max_tokens=10)] = "long"
        owner[producer.submit("y" * 400 + str(i), tenant=short_prompts, max_tokens=10)] = "short"
    limited = FairTake(producer.redis, limits={"openai:*": ModelLimit(tpm=100_000)})
    shares = Counter(owner[j] for j in start_all(limited, limit=55))
    # ~1,040 vs ~140 tokens a job: 55 starts take about 7 long-prompt jobs, not 27.
    assert 5 <= shares["long"] <= 9, shares
    counted = producer.redis.hgetall(keys.metrics("fair_cost"))
    started = producer.redis.hgetall(keys.metrics("fair_started"))
    per_job = {
        t: int(counted[f"{t}|normal"]) / int(started[f"{t}|normal"])
        for t in tenants_of(started, long_prompts, short_prompts)
    }
    assert per_job[long_prompts] > 5 * per_job[short_prompts]


def test_a_start_charged_in_tokens_is_trued_up_once_to_the_tokens_used(
    producer: DirectProducer,
) -> None:
    much, other = tenants()
    asks_much = chat("x" * 400, max_tokens=4000)
    producer.submit("x", tenant=much, request=asks_much)
    producer.submit("y", tenant=much, request=asks_much)
    producer.submit("z", tenant=other)
    limited = FairTake(producer.redis, {much: 2.0}, {"openai:*": ModelLimit(tpm=100_000)})
    taken = limited.take(QUEUES, "tok", 30)
    assert taken is not None and taken.claim.record is not None
    record = taken.claim.record
    priority, charged = record["fair_charge"].split()
    assert priority == "normal" and int(charged) > 4000  # the estimate: prompt + max_tokens
    state, order = keys.fair_state("normal"), keys.fair_tenants("normal")
    vt_before = float(producer.redis.hget(state, f"vt:{much}"))  # type: ignore[arg-type]
    score_before = producer.redis.zscore(order, much)
    settle = FairSettle(producer.redis, {much: 2.0})
    [call] = settle.calls(taken.job_id, record, 150, 30)
    assert float(call.run()) == pytest.approx((150 - int(charged)) / 2.0)
    vt_after = float(producer.redis.hget(state, f"vt:{much}"))  # type: ignore[arg-type]
    assert vt_after == pytest.approx(vt_before + (150 - int(charged)) / 2.0)
    if score_before is not None:  # still waiting: its place in the order moved too
        assert producer.redis.zscore(order, much) == pytest.approx(vt_after)
    assert call.run() is None  # once: a retried ending does not count it again
    assert producer.redis.hget(keys.job(taken.job_id), "fair_charge") is None
    average = producer.redis.hget(keys.FAIR_OUTPUT, f"{much}|openai:gpt-4o-mini")
    assert average is not None and float(average) == 30
    # Its next start is charged the output its answers have used, not max_tokens 4000.
    later = [t for t in iter(lambda: limited.take(QUEUES, "tok", 30), None)]
    [second] = [
        t.claim.record for t in later if t.claim.record and t.claim.record["tenant"] == much
    ]
    assert int(second["fair_charge"].split()[1]) == int(charged) - 4000 + 30


def test_a_start_charged_one_is_not_trued_up(producer: DirectProducer) -> None:
    producer.submit("x", tenant=tenants()[0])
    taken = FairTake(producer.redis).take(QUEUES, "tok", 30)
    assert taken is not None and taken.claim.record is not None
    assert "fair_charge" not in taken.claim.record
    assert FairSettle(producer.redis, {}).calls(taken.job_id, taken.claim.record, 150, 30) == []


def tenants_of(started: dict[str, str], *names: str) -> list[str]:
    return [n for n in names if f"{n}|normal" in started]


def test_without_a_tpm_limit_every_start_costs_one(producer: DirectProducer) -> None:
    long_prompts, short_prompts = tenants()
    owner = {}
    for i in range(50):
        owner[producer.submit("x" * 4000 + str(i), tenant=long_prompts)] = "long"
        owner[producer.submit("y" * 40 + str(i), tenant=short_prompts)] = "short"
    rpm_only = FairTake(producer.redis, limits={"openai:*": ModelLimit(rpm=1000)})
    shares = Counter(owner[j] for j in start_all(rpm_only, limit=40))
    assert shares == {"long": 20, "short": 20}


def test_a_job_that_cannot_start_costs_its_tenant_nothing(producer: DirectProducer) -> None:
    a, b = tenants()
    cancelled = [producer.submit(f"a {i}", tenant=a) for i in range(10)]
    for job_id in cancelled:
        producer.store.finish(job_id, "cancelled", allowed=("queued",))
    live_a = [producer.submit(f"a live {i}", tenant=a) for i in range(5)]
    live_b = [producer.submit(f"b {i}", tenant=b) for i in range(5)]
    order = start_all(FairTake(producer.redis))
    assert sorted(order) == sorted(live_a + live_b)
    # a's cancelled jobs did not push it behind: the two alternate from the start
    firsts = order[:4]
    assert len(set(firsts) & set(live_a)) == 2, firsts


def test_a_tenant_back_from_idle_banks_no_credit(producer: DirectProducer) -> None:
    busy, idle = tenants()
    take = FairTake(producer.redis)
    for i in range(50):
        producer.submit(f"busy {i}", tenant=busy)
    assert len(start_all(take, limit=40)) == 40  # idle had nothing queued meanwhile
    returning = [producer.submit(f"idle {i}", tenant=idle) for i in range(20)]
    order = start_all(take, limit=20)
    assert 9 <= len(set(order) & set(returning)) <= 11, "alternates, no burst of 20"


def test_sorted_messages_are_neither_orphans_nor_missing_from_the_queue_depth(
    producer: DirectProducer,
) -> None:
    a, b = tenants()
    for i in range(5):
        producer.submit(f"a {i}", tenant=a)
        producer.submit(f"b {i}", tenant=b)
    assert FairTake(producer.redis).take(QUEUES, "tok", 30) is not None  # sorts all ten
    assert sum(producer.redis.llen(n) for n in keys.broker_lists(QUEUES)) == 0
    assert held(producer.redis, ["normal"]) == {"normal": 9}
    assert producer.store.orphans("normal", older_than_s=0) == []


def test_queue_position_follows_the_fair_order(producer: DirectProducer) -> None:
    big, small = tenants()
    backlog = [producer.submit(f"big {i}", tenant=big) for i in range(100)]
    mine = [producer.submit(f"small {i}", tenant=small) for i in range(3)]
    client = producer.redis
    # Not sorted yet: arrival order, behind the whole backlog.
    assert queue_position(client, mine[0], "normal", small) == (101, 100)
    started = FairTake(client).take(QUEUES, "tok", 30)
    assert started is not None and started.job_id == backlog[0]
    assert queue_position(client, mine[0], "normal", small) == (1, 0)
    assert queue_position(client, mine[2], "normal", small) == (5, 4)
    assert queue_position(client, backlog[50], "normal", big) == (53, 52)


@pytest.mark.parametrize(
    "pattern",
    ["openai:*", "openai:gpt-4o*", "gpt-4o-mini", "*", "anthropic:claude-?-*", "openai:gpt-[45]*",
     "openai:o[!1]*", "local:llama3.1:8b", "a+b(c)%d.e"],
)  # fmt: skip
def test_limit_patterns_match_in_lua_as_in_python(redis_client: redis.Redis, pattern: str) -> None:
    models = ["openai:gpt-4o-mini", "openai:gpt-5", "openai:o1", "openai:o3-mini",
              "anthropic:claude-3-haiku", "anthropic:claude-haiku-4-5", "local:llama3.1:8b",
              "x:a+b(c)%d.e", "x:a+b(c)%dxe", "gpt-4o-mini"]  # fmt: skip
    lua = "for p in string.gmatch(ARGV[1], '[^\\n]+') do if string.find(ARGV[2], p) then " \
          "return 1 end end return 0"  # fmt: skip
    for model in models:
        _, _, bare = model.partition(":")
        expected = fnmatch.fnmatchcase(model, pattern) or (
            ":" not in pattern and fnmatch.fnmatchcase(bare, pattern)
        )
        found = redis_client.eval(lua, 0, glob_to_lua(pattern), model)
        assert bool(found) == expected, (pattern, model)


@pytest.mark.parametrize(
    "value", ['{"a": 0}', '{"a": -1}', '{"a": "2"}', '{"a": true}', '{"bad name": 1}', "[1]",
              "{", '{"a": 1e300}']
)  # fmt: skip
def test_bad_weights_are_refused_at_start(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COURIER_TENANT_WEIGHTS", value)
    with pytest.raises(ValueError, match="COURIER_TENANT_WEIGHTS"):
        Settings()


def test_weights_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COURIER_TENANT_WEIGHTS", '{"acme": 3, "beta": 0.5}')
    assert Settings().tenant_weights == {"acme": 3.0, "beta": 0.5}


def test_courier_fair_shows_the_tenants_waiting(producer: DirectProducer, redis_url: str) -> None:
    big, small = tenants()
    for i in range(6):
        producer.submit(f"big {i}", tenant=big)
    producer.submit("small", tenant=small)
    assert FairTake(producer.redis, weights={big: 2}).take(QUEUES, "tok", 30) is not None
    done = subprocess.run(
        [sys.executable, "-m", "producers.cli", "fair", "--json"],
        env={**os.environ, "COURIER_REDIS_URL": redis_url,
             "COURIER_TENANT_WEIGHTS": json.dumps({big: 2})},
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    rows = json.loads(done.stdout)["tenants"]
    assert [(r["tenant"], r["waiting"], r["weight"]) for r in rows] == [
        (small, 1, 1.0),
        (big, 5, 2.0),
    ]
    assert rows[1]["lag"] == 0.5 and rows[1]["started"] == 1


def test_metrics_show_the_starts_and_the_lag(producer: DirectProducer) -> None:
    a, b = tenants()
    for i in range(3):
        producer.submit(f"a {i}", tenant=a)
        producer.submit(f"b {i}", tenant=b)
    take = FairTake(producer.redis)
    assert take.take(QUEUES, "tok", 30) is not None and take.take(QUEUES, "tok", 30) is not None
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in FairCollector(producer.redis).collect()
        for s in family.samples
    }
    assert samples[("courier_fair_starts_total", (("priority", "normal"), ("tenant", a)))] == 1
    assert samples[("courier_fair_cost_total", (("priority", "normal"), ("tenant", b)))] == 1
    assert samples[("courier_fair_lag", (("priority", "normal"), ("tenant", a)))] == 1
    assert samples[("courier_fair_tenants_waiting", (("priority", "normal"),))] == 2
