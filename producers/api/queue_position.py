"""Where a queued job stands: its place in the per-priority queue index the job store keeps
(``keys.queued``), and the cluster's recent start rate for an estimated start. Read only;
the job store (:mod:`core.store`) owns every change to these keys.

``GET /v1/jobs/{id}`` reads the same in one call with the record
(:mod:`producers.api.read_script`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import redis

from config.celery import PRIORITIES
from core import keys
from core.jobs import iso

WINDOW_S = 60  # the start rate's window


def queue_position(
    client: redis.Redis,
    job_id: str,
    priority: str,
    tenant: str = "",
    weights: Mapping[str, float] | None = None,
) -> tuple[int, int] | None:
    """(position in its queue, 1 = next; jobs ahead of it in all queues), or None when
    the job is not waiting in a queue (scheduled for later, running, ended). Within its
    priority the position follows the fair order between tenants (:func:`core.fair.fair_ahead`)
    once the intake has sorted the job's message; before that, the order of arrival."""
    pipe = client.pipeline(transaction=False)
    for name in PRIORITIES:
        pipe.zrank(keys.queued(name), job_id)
    for name in PRIORITIES:
        pipe.zcard(keys.queued(name))
    return _position(pipe.execute())


def _position(found: Sequence[Any]) -> tuple[int, int] | None:
    ranks, sizes = found[: len(PRIORITIES)], found[len(PRIORITIES) :]
    for index, rank in enumerate(ranks):
        if rank is not None:
            fair = fair_ahead(client, PRIORITIES[index], tenant, job_id, weights or {})
            within = rank if fair is None else fair
            return within + 1, within + sum(sizes[:index])
    return None


def start_rate(client: redis.Redis, window_s: int = WINDOW_S) -> float:
    """Jobs started per second over the last ``window_s`` seconds, cluster-wide."""
    return _rate(client.mget(_start_keys(int(time.time()), window_s)), window_s)  # type: ignore[arg-type]


def _start_keys(now: int, window_s: int) -> list[str]:
    return [keys.starts(now - i) for i in range(1, window_s + 1)]


def _rate(counts: Sequence[Any], window_s: int) -> float:
    return sum(int(c) for c in counts if c) / window_s


def eta(now: float, ahead: int, rate: float) -> str | None:
    """When a job with ``ahead`` jobs before it should start at ``rate`` starts per second
    (None while nothing has started lately)."""
    return iso(now + (ahead + 1) / rate) if rate > 0 else None
