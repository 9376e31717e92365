"""Where a queued job stands: its place in the per-priority queue index the job store keeps
(``keys.queued``), in the fair order between tenants within a priority, and the cluster's
recent start rate for an estimated start. Read only; the job store (:mod:`core.store`) and
the intake (:mod:`core.fair`) own every change to these keys."""

from __future__ import annotations

import time
from collections.abc import Mapping

import redis

from config.celery import PRIORITIES
from core import keys
from core.fair import fair_ahead


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
    found = pipe.execute()
    ranks, sizes = found[: len(PRIORITIES)], found[len(PRIORITIES) :]
    for index, rank in enumerate(ranks):
        if rank is not None:
            fair = fair_ahead(client, PRIORITIES[index], tenant, job_id, weights or {})
            within = rank if fair is None else fair
            return within + 1, within + sum(sizes[:index])
    return None


def start_rate(client: redis.Redis, window_s: int = 60) -> float:
    """Jobs started per second over the last ``window_s`` seconds, cluster-wide."""
    now = int(time.time())
    counts = client.mget([keys.starts(now - i) for i in range(1, window_s + 1)])
    return sum(int(c) for c in counts if c) / window_s  # type: ignore[union-attr]
