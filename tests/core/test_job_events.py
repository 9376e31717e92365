"""A job's events as the store's Lua scripts write them, against real Redis: one event per
change, in order, ids consecutive, output only under the lease, kept as long as the job."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from core import events, keys
from core.event_writer import EventWriter
from core.events import JobEvent, from_entry, from_live, parse_event_id
from core.store import JobStore

FIELDS: dict[str, Any] = {
    "model": "openai:gpt-4o-mini",
    "kind": "chat",
    "priority": "normal",
    "request": {"messages": [{"role": "user", "content": "Hi"}]},
    "fallback_models": ["anthropic:claude-haiku-4-5"],
    "metadata": {},
    "max_attempts": 5,
    "timeout_s": 120,
}


def read(client: redis.Redis, job_id: str) -> list[JobEvent]:
    entries = client.xrange(keys.job_events(job_id))
    return [from_entry(entry_id, fields) for entry_id, fields in entries]  # type: ignore[union-attr]


def test_status_changes_are_events_in_order(redis_client: redis.Redis) -> None:
    store = JobStore(redis_client, retention_s=3600)
    job_id, _ = store.create("t", FIELDS)
    claim = store.claim(job_id, "tok", 10)
    assert claim.record is not None
    assert store.begin_attempt(job_id, "tok", "openai:gpt-4o-mini") == 2
    assert store.requeue(job_id, "tok", 5, "retry", {"route_index": 1, "route_failures": 0})
    store.claim(job_id, "tok2", 10)  # not yet due: refused, no event
    redis_client.hset(keys.job(job_id), "not_before", 0)
    store.claim(job_id, "tok2", 10)
    store.finish(job_id, "succeeded", token="tok2", fields={"result": {"output": "hi"}})

    got = read(redis_client, job_id)
    assert [e.id for e in got] == list(range(1, len(got) + 1))
    assert [(e.event, e.data().get("status"), e.data().get("attempt")) for e in got] == [
        ("job.status", "queued", 0),
        ("job.status", "running", 1),
        ("job.status", "running", 2),
        ("job.status", "queued", 2),
        ("job.status", "running", 3),
        ("job.succeeded", None, None),
    ]
    assert got[3].data()["waiting_for"] == "retry"
    assert got[3].data()["model"] == "anthropic:claude-haiku-4-5"  # the route moved on
    assert got[4].data()["waiting_for"] is None
    assert got[-1].terminal
    ttl = redis_client.pttl(keys.job_events(job_id))
    assert 0 < ttl <= redis_client.pttl(keys.job(job_id)) + 5


def test_output_only_under_the_lease(redis_client: redis.Redis) -> None:
    store = JobStore(redis_client, retention_s=3600)
    job_id, _ = store.create("t", FIELDS)
    store.claim(job_id, "tok", 10)
    writer = EventWriter(redis_client)
    deltas = [(events.DELTA, 1, "openai:gpt-4o-mini", "Hel"), (events.DELTA, 1, "m", "lo")]
    assert writer.emit_output(job_id, "tok", deltas) == 1
    assert writer.emit_output(job_id, "other", deltas) == 0
    assert writer.emit_output(job_id, "tok", [(events.RESET, 1, "provider_error", "")]) == 1
    store.finish(job_id, "cancelled", allowed=("running",))
    assert writer.emit_output(job_id, "tok", deltas) == 0
    got = read(redis_client, job_id)
    assert [e.event for e in got] == [
        "job.status",
        "job.status",
        "output.delta",
        "output.delta",
        "output.reset",
        "job.cancelled",
    ]
    assert "".join(e.data()["text"] for e in got if e.event == "output.delta") == "Hello"
    assert got[4].data() == {"attempt": 1, "reason": "provider_error"}


def test_live_channel_carries_each_event(redis_client: redis.Redis) -> None:
    store = JobStore(redis_client, retention_s=3600)
    job_id, _ = store.create("t", FIELDS)
    pubsub = redis_client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(keys.job_live(job_id))
    pubsub.get_message(timeout=1)
    store.claim(job_id, "tok", 10)
    message = None
    for _ in range(20):
        message = pubsub.get_message(timeout=0.5)
        if message:
            break
    pubsub.close()
    assert message is not None
    live = from_live(message["data"])
    stored = read(redis_client, job_id)[-1]
    assert live == stored and live.data()["status"] == "running"


def test_identical_state_is_announced_once(redis_client: redis.Redis) -> None:
    store = JobStore(redis_client, retention_s=3600)
    job_id, _ = store.create("t", FIELDS)
    store.claim(job_id, "tok", 10)
    writer = EventWriter(redis_client)
    assert writer.announce_model(job_id, "tok", "openai:gpt-4o-mini")  # same: no event
    assert writer.announce_model(job_id, "tok", "anthropic:claude-haiku-4-5")
    assert [e.data()["model"] for e in read(redis_client, job_id)] == [
        "openai:gpt-4o-mini",
        "openai:gpt-4o-mini",
        "anthropic:claude-haiku-4-5",
    ]


def test_deleting_a_job_deletes_its_events(redis_client: redis.Redis) -> None:
    store = JobStore(redis_client, retention_s=3600)
    job_id, _ = store.create("t", FIELDS)
    store.delete(job_id, "t")
    assert not redis_client.exists(keys.job_events(job_id))


@pytest.mark.parametrize("raw", ["", "-1", "1.5", "0-3", "abc", "9" * 20, " 1 2"])
def test_malformed_event_ids(raw: str) -> None:
    with pytest.raises(ValueError):
        parse_event_id(raw)


def test_event_ids() -> None:
    assert parse_event_id("0") == 0
    assert parse_event_id(" 42 ") == 42
