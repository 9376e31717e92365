"""Where a queued job stands: its place in the per-priority queue index the job store keeps
(``keys.queued``), in the fair order between tenants within a priority, and the cluster's
recent start rate for an estimated start. Read only; the job store (:mod:`core.store`) and
the intake (:mod:`core.fair`) own every change to these keys.

``GET /v1/jobs/{id}`` reads the record, the arrival order and the start rate in one call
(:mod:`producers.api.read_script`), then the fair order through the shared pipelines
(:func:`fair_place`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import redis

from config.celery import PRIORITIES
from core import keys
from core.coalesce import Coalescer
from core.fair import fair_ahead, fair_ahead_of, fair_reads
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
    found = pipe.execute()
    ranks, sizes = found[: len(PRIORITIES)], found[len(PRIORITIES) :]
    for index, rank in enumerate(ranks):
        if rank is not None:
            fair = fair_ahead(client, PRIORITIES[index], tenant, job_id, weights or {})
            within = rank if fair is None else fair
            return within + 1, within + sum(sizes[:index])
    return None


async def fair_place(
    batched: Coalescer,
    job_id: str,
    tenant: str,
    weights: Mapping[str, float],
    priority: str,
    rank: int,
) -> int:
    """:func:`queue_position`'s place within the priority, from the arrival ``rank``: the
    fair order's once the intake has sorted the job's message, else ``rank``."""
    own_rank, active = await batched.run(
        [
            ("ZRANK", keys.fair_queued(priority, tenant), job_id),
            ("ZRANGE", keys.fair_tenants(priority), 0, -1, "WITHSCORES"),
        ]
    )
    if own_rank is None:
        return rank
    scores = {name: float(score) for name, score in zip(active[::2], active[1::2], strict=True)}
    found = await batched.run(fair_reads(priority, scores)) if scores else []
    return fair_ahead_of(int(own_rank), scores, found, tenant, weights)


def start_rate(client: redis.Redis, window_s: int = WINDOW_S) -> float:
    """Jobs started per second over the last ``window_s`` seconds, cluster-wide."""
    now = int(time.time())
    counts: Sequence[Any] = client.mget([keys.starts(now - i) for i in range(1, window_s + 1)])  # type: ignore[assignment]
    return sum(int(c) for c in counts if c) / window_s


def eta(now: float, ahead: int, rate: float) -> str | None:
    """When a job with ``ahead`` jobs before it should start at ``rate`` starts per second
    (None while nothing has started lately)."""
    return iso(now + (ahead + 1) / rate) if rate > 0 else None
