"""A job's callback as both sides see it: its state in the record, the durable schedule of
its attempts, redelivery and the cluster-wide counters.

When the next delivery attempt happens, and the durable schedule that holds it.

Waits between attempts follow ``COURIER_CALLBACK_RETRY_SCHEDULE`` with ±20 % jitter; a
receiver's ``Retry-After`` may push an attempt later (never earlier than the schedule,
never more than :data:`MAX_RETRY_AFTER_EXTRA_S` past it). The next attempt waits in the
``CALLBACKS_SCHEDULED`` zset (job id → due ms), not in a worker's memory: the sweeping
worker's callback timer (``workers.sweeper``) wakes when the earliest entry is due, takes
the due entries with :meth:`CallbackSchedule.due` and enqueues them.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

import redis

from core import keys, scripts
from core.errors import RedeliverError
from core.jobs import TERMINAL
from core.records import Record, to_view
from core.store import CALLBACK_SAFETY_S, JobStore

JITTER = 0.2
MAX_RETRY_AFTER_EXTRA_S = 3600.0
REDO_S = 120.0  # a due entry taken by the sweeper comes back this much later unless handled


def next_delay(
    schedule: Sequence[float],
    failures: int,
    retry_after: float | None = None,
    rand: random.Random | None = None,
) -> float | None:
    """Seconds until the next attempt after ``failures`` failed attempts in this round,
    or None when the schedule is used up (the callback has failed)."""
    if failures < 1 or failures > len(schedule):
        return None
    base = schedule[failures - 1]
    delay = base * (rand or random).uniform(1 - JITTER, 1 + JITTER)
    if retry_after is not None:
        delay = min(max(delay, retry_after), delay + MAX_RETRY_AFTER_EXTRA_S)
    return delay


def schedule_at(client: redis.Redis, job_id: str, due_s: float) -> None:
    """Put (or move) the job's next attempt in the schedule."""
    client.zadd(keys.CALLBACKS_SCHEDULED, {job_id: int(due_s * 1000)})


def unschedule(client: redis.Redis, job_id: str) -> None:
    client.zrem(keys.CALLBACKS_SCHEDULED, job_id)


class CallbackSchedule:
    """The sweeper's side: takes due callbacks atomically (with a redo score)."""

    def __init__(self, client: redis.Redis, redo_s: float = REDO_S) -> None:
        self.redis = client
        self.redo_s = redo_s
        self._due = client.register_script(scripts.DUE_CALLBACKS)

    def next_due(self) -> float | None:
        """When the earliest scheduled attempt is due (epoch s), or None when none is."""
        head = self.redis.zrange(keys.CALLBACKS_SCHEDULED, 0, 0, withscores=True)
        return float(head[0][1]) / 1000 if head else None  # type: ignore[index]

    def due(self, limit: int = 1000) -> list[str]:
        ids: list[str] = self._due(
            keys=[keys.CALLBACKS_SCHEDULED],
            args=[int(time.time() * 1000), limit, int(self.redo_s * 1000), keys.JOB_PREFIX],
        )
        return [i.decode() if isinstance(i, bytes) else str(i) for i in ids]


def callback_state(record: Record) -> dict[str, Any]:
    raw = record.get("callback")
    state: dict[str, Any] = json.loads(raw) if raw else {}
    state.setdefault("attempts", 0)
    state.setdefault("log", [])
    state["url"] = record.get("callback_url")
    return state


def redeliver(
    store: JobStore, job_id: str, *, enqueue: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Queue the job's callback again (``POST /v1/jobs/{id}/redeliver``): status back to
    pending, due now, a fresh retry schedule; attempts keep counting and the event keeps
    its ``webhook-id``. ``enqueue(job_id)`` sends it at once; whether or not it is given
    (or fails), the sweeper sends it within :data:`CALLBACK_SAFETY_S`. Returns the job."""
    record = store.get(job_id)
    if record is None:
        raise RedeliverError("not_found", f"job {job_id} not found")
    if not record.get("callback_url"):
        raise RedeliverError("no_callback", f"job {job_id} has no callback_url")
    if record["status"] not in TERMINAL:
        raise RedeliverError(
            "not_ended", f"job {job_id} is {record['status']}; its callback is sent when it ends"
        )
    state = callback_state(record)
    state.update(status="pending", next_attempt_at=None)
    store.set_fields(job_id, {"callback": state, "callback_round": int(state["attempts"])})
    schedule_at(store.redis, job_id, time.time() + CALLBACK_SAFETY_S)
    if enqueue is not None:
        enqueue(job_id)
    return to_view(store.get(job_id) or record)


def delivery_stats(client: redis.Redis) -> dict[str, int]:
    """Cluster-wide counters since the Redis was new: attempts, delivered, failed."""
    raw: dict[Any, Any] = client.hgetall(keys.CALLBACK_STATS)  # type: ignore[assignment]
    out = {"attempts": 0, "delivered": 0, "failed": 0}
    for name, value in raw.items():
        key = name.decode() if isinstance(name, bytes) else str(name)
        out[key] = int(value)
    return out


def dead_letters(client: redis.Redis) -> int:
    """How many callbacks have failed for good (the schedule used up, or a 410)."""
    return delivery_stats(client)["failed"]
