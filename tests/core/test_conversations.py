"""Conversations in the store, against real Redis: a child meets its parent (ready, waiting,
failed), the parent's ending releases or fails its waiting children in the same script, the
line of ancestors is read in one call, and the bounds hold."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest
import redis

from config.settings import Settings
from core import conversations, keys, metrics
from core.errors import InvalidRequest
from core.records import Record, to_view
from core.store import JobStore

RETENTION = 3600


def fields(text: str, **extra: Any) -> dict[str, Any]:
    return {
        "model": "openai:gpt-4o-mini",
        "kind": "chat",
        "priority": "normal",
        "request": {"messages": [{"role": "user", "content": text}], **extra},
        "fallback_models": [],
        "metadata": {},
        "max_attempts": 5,
        "timeout_s": 120,
    }


@pytest.fixture()
def store(redis_client: redis.Redis) -> JobStore:
    return JobStore(redis_client, retention_s=RETENTION)


@pytest.fixture()
def tenant() -> str:
    return f"t-{uuid.uuid4().hex[:8]}"


SETTINGS = Settings(conversation_max_messages=50, conversation_max_bytes=20_000)


def child(store: JobStore, tenant: str, parent: str, text: str, **extra: Any) -> tuple[str, str]:
    """Submit a child as the API does: prepare, create, attach → (id, how it started)."""
    base = fields(text)
    base["request"].update(extra)
    base |= conversations.prepare(store.redis, tenant, parent, base["request"], SETTINGS)
    job_id, _ = store.create(tenant, base)
    record = {"id": job_id, "parent_job_id": parent, "tenant": tenant}
    return job_id, conversations.attach(store.redis, record, RETENTION)


def succeed(store: JobStore, job_id: str, content: str = "ok", **message: Any) -> list[Any]:
    released: list[tuple[str, str]] = []
    result = {
        "output": content,
        "message": {"role": "assistant", "content": content, "tool_calls": [], **message},
        "finish_reason": "stop",
        "usage": {"input_tokens": 1, "output_tokens": 1},
        "model": "openai:gpt-4o-mini",
        "latency_ms": 1,
    }
    done, _, _ = store.finish(
        job_id, "succeeded", allowed=("queued", "running"), fields={"result": result},
        released=released,
    )  # fmt: skip
    assert done
    return released


def record(store: JobStore, job_id: str) -> Record:
    found = store.get(job_id)
    assert found is not None
    return found


def test_a_child_of_a_succeeded_parent_is_ready(store: JobStore, tenant: str) -> None:
    root, _ = store.create(tenant, fields("one"))
    succeed(store, root)
    job_id, start = child(store, tenant, root, "two")
    assert start == "ready"
    view = to_view(record(store, job_id))
    assert view["waiting_for"] is None
    assert view["parent_job_id"] == root and view["conversation_id"] == root
    assert to_view(record(store, root))["conversation_id"] == root


def test_a_waiting_child_holds_no_queue_place_and_is_released_by_success(
    store: JobStore, tenant: str
) -> None:
    root, _ = store.create(tenant, fields("one"))
    job_id, start = child(store, tenant, root, "two")
    assert start == "waiting"
    assert record(store, job_id)["waiting_for"] == "parent"
    assert store.redis.zscore(keys.queued("normal"), job_id) is None
    assert succeed(store, root) == [(job_id, "normal")]
    assert record(store, job_id)["waiting_for"] == ""
    assert store.redis.zscore(keys.queued("normal"), job_id) is not None
    assert not store.redis.exists(keys.job_children(root))


def test_released_children_are_on_the_schedule_should_their_enqueue_be_lost(
    store: JobStore, tenant: str
) -> None:
    """The worker that ended the parent dies before enqueuing the child: 30 s later the
    sweeper's DUE enqueues it; once it has been claimed, DUE drops it."""
    root, _ = store.create(tenant, fields("one"))
    job_id, _ = child(store, tenant, root, "two")
    succeed(store, root)
    due_at = store.redis.zscore(keys.SCHEDULED, job_id)
    assert due_at is not None and due_at > time.time() * 1000 + 20_000
    store.redis.zadd(keys.SCHEDULED, {job_id: 0})  # 30 s later
    assert (job_id, "normal") in store.due()
    store.claim(job_id, "token", 20)
    store.redis.zadd(keys.SCHEDULED, {job_id: 0})
    assert job_id not in [found for found, _ in store.due()]


def test_a_failed_parent_fails_its_waiting_line(store: JobStore, tenant: str) -> None:
    root, _ = store.create(tenant, fields("one"))
    kid, _ = child(store, tenant, root, "two")
    grandkid, start = child(store, tenant, kid, "three")
    assert start == "waiting"
    counted = keys.metrics(metrics.FINISHED), "failed|openai:gpt-4o-mini|normal"
    before = int(store.redis.hget(*counted) or 0)
    done, _, _ = store.finish(root, "cancelled", allowed=("queued",))
    assert done
    assert int(store.redis.hget(*counted) or 0) == before + 2  # both ended jobs are counted
    for job_id, parent in ((kid, root), (grandkid, kid)):
        view = to_view(record(store, job_id))
        assert view["status"] == "failed"
        assert view["error"]["type"] == "parent_failed"
        assert parent in view["error"]["message"]
        assert store.redis.zscore(keys.tenant_unfinished(tenant), job_id) is None
    events = store.redis.xrange(keys.job_events(grandkid))
    assert events[-1][1]["e"] == "job.failed"


def test_a_child_of_a_failed_parent_fails_at_once_with_its_callback_due(
    store: JobStore, tenant: str
) -> None:
    root, _ = store.create(tenant, fields("one"))
    store.finish(root, "failed", allowed=("queued",), fields={"error": {"type": "timeout"}})
    base = fields("two") | {"callback_url": "https://example.com/hook"}
    base |= conversations.prepare(store.redis, tenant, root, base["request"], SETTINGS)
    job_id, _ = store.create(tenant, base)
    start = conversations.attach(
        store.redis, {"id": job_id, "parent_job_id": root, "tenant": tenant}, RETENTION
    )
    assert start == "failed"
    view = to_view(record(store, job_id))
    assert view["error"]["type"] == "parent_failed"
    assert view["callback"]["status"] == "pending"
    assert store.redis.zscore(keys.CALLBACKS_SCHEDULED, job_id) is not None


def test_the_line_is_read_in_order_and_built_for_the_provider(store: JobStore, tenant: str) -> None:
    root, _ = store.create(tenant, fields("one", system="Be brief."))
    succeed(store, root, "reply one")
    mid, _ = child(store, tenant, root, "two")
    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    succeed(store, mid, "", tool_calls=[call])
    leaf, _ = child(store, tenant, mid, "three")
    links = conversations.chain(store.redis, leaf, 10)
    assert [link.job_id for link in links] == [leaf, mid, root]
    text = [(m["role"], m["content"], m["job_id"]) for m in conversations.transcript(links)]
    assert text == [
        ("system", "Be brief.", root),
        ("user", "one", root),
        ("assistant", "reply one", root),
        ("user", "two", mid),
        ("assistant", "", mid),
        ("user", "three", leaf),
    ]
    leaf_record = record(store, leaf)
    built = conversations.request_for(
        store.redis, leaf_record, json.loads(leaf_record["request"]), SETTINGS
    )
    assert built["system"] == "Be brief."  # kept from the root
    assert built["messages"][2] == {"role": "user", "content": "two"}
    assert built["messages"][3]["tool_calls"] == [call]
    assert "tool_calls" not in built["messages"][1]  # an empty list is left out
    assert [m["content"] for m in built["messages"]][-1] == "three"


def test_refusals_at_submission(store: JobStore, tenant: str) -> None:
    root, _ = store.create(tenant, fields("one"))
    with pytest.raises(conversations.ParentRefused, match="no job of this tenant"):
        conversations.prepare(store.redis, "another", root, fields("x")["request"], SETTINGS)
    with pytest.raises(conversations.ParentRefused, match="no job of this tenant"):
        conversations.prepare(store.redis, tenant, "job_NONE", fields("x")["request"], SETTINGS)
    big = {"messages": [{"role": "user", "content": "x" * 30_000}]}
    with pytest.raises(conversations.ParentRefused, match="COURIER_CONVERSATION_MAX_BYTES"):
        conversations.prepare(store.redis, tenant, root, big, SETTINGS)
    many = {"messages": [{"role": "user", "content": "x"}] * 49}
    with pytest.raises(conversations.ParentRefused, match="COURIER_CONVERSATION_MAX_MESSAGES"):
        conversations.prepare(store.redis, tenant, root, many, SETTINGS)


def test_sizes_are_kept_so_the_check_does_not_walk_the_line(store: JobStore, tenant: str) -> None:
    parent, _ = store.create(tenant, fields("m"))
    for _ in range(5):
        succeed(store, parent, "r")
        parent, _ = child(store, tenant, parent, "m")
    found = record(store, parent)
    assert int(found["conv_messages"]) == 11  # 6 requests, 5 replies
    assert int(found["conv_depth"]) == 5
    built = conversations.request_for(
        store.redis, {**found, "parent_job_id": found["parent_job_id"]},
        json.loads(found["request"]), SETTINGS,
    )  # fmt: skip
    # the parent of this record has succeeded: the transcript is the line, then its own
    assert len(built["messages"]) == 11
    assert int(found["conv_bytes"]) == conversations.json_bytes(built["messages"])


def test_ancestors_are_kept_as_long_as_their_descendants(store: JobStore, tenant: str) -> None:
    root, _ = store.create(tenant, fields("one"))
    succeed(store, root)
    store.redis.expire(keys.job(root), 60)
    child(store, tenant, root, "two")
    assert store.redis.ttl(keys.job(root)) > 60


def test_a_started_child_whose_parent_is_gone_fails(store: JobStore, tenant: str) -> None:
    root, _ = store.create(tenant, fields("one"))
    succeed(store, root)
    kid, _ = child(store, tenant, root, "two")
    store.redis.delete(keys.job(root))
    found = record(store, kid)
    with pytest.raises(conversations.ParentFailed, match="no longer kept"):
        conversations.request_for(store.redis, found, json.loads(found["request"]), SETTINGS)


def test_a_transcript_past_the_bounds_at_its_start_fails(store: JobStore, tenant: str) -> None:
    """A parent's reply is counted when the child starts (its size was unknown before)."""
    root, _ = store.create(tenant, fields("one"))
    kid, start = child(store, tenant, root, "two")
    assert start == "waiting"
    succeed(store, root, "y" * 2000)
    found = record(store, kid)
    tiny = Settings(conversation_max_messages=50, conversation_max_bytes=1024)
    with pytest.raises(InvalidRequest, match="COURIER_CONVERSATION_MAX_BYTES"):
        conversations.request_for(store.redis, found, json.loads(found["request"]), tiny)
