"""``POST /v1/jobs/batch`` with cost, budgets and the cache: jobs answered from the cache are
created already succeeded, the others are checked against the budget and created as usual
(``routes.jobs._create_batch``), all or none: a refusal removes the cached ones too."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from core.jobs import JobSubmission
from core.queues import enqueue_callback
from core.records import Record
from producers.api import costs
from producers.api.deps import Services

log = logging.getLogger("courier.api.jobs")
Item = tuple[dict[str, Any], str | None]
Create = Callable[[Services, str, list[Item]], tuple[list[Record], bool]]


def send_callback(celery: Any, job_id: str) -> None:
    """Queue the webhook of a job that ended at its creation (a cache hit)."""
    try:
        enqueue_callback(celery, job_id)
    except Exception as exc:  # the store scheduled it too: the sweeper sends it later
        log.warning("enqueue of the callback of %s failed: %s", job_id, exc)


def create_batch(
    services: Services,
    tenant: str,
    jobs: Sequence[JobSubmission],
    items: list[Item],
    create: Create,
) -> tuple[list[Record], bool]:
    """Store and enqueue a batch (in the threadpool): (records in order, any created)."""
    cost, store = services.cost, services.store
    hits: dict[int, Record] = {}
    for index, job in enumerate(jobs):
        if job.cache is not None:
            fields, key = items[index]
            found = cost.cache.create_from_cache(
                tenant, fields, job.cache.ttl_s, key, store.retention_s
            )
            if found.record is not None:
                hits[index] = found.record
    rest = [index for index in range(len(jobs)) if index not in hits]
    try:
        if rest and costs.replayed(store, tenant, items[rest[0]][1]) is None:
            costs.check_budget(cost, tenant, max(costs.worst_nano(cost, jobs[i]) for i in rest))
        records, created = (
            create(services, tenant, [items[i] for i in rest]) if rest else ([], False)
        )
    except Exception:
        if hits:
            store.delete_many([(record["id"], tenant) for record in hits.values()])
            for index in hits:
                key = items[index][1]
                if key:
                    store.forget_idempotency(tenant, key)
        raise
    for record in hits.values():
        if record.get("callback_url"):
            send_callback(services.celery, record["id"])
    made = iter(records)
    ordered = [hits[index] if index in hits else next(made) for index in range(len(jobs))]
    return ordered, created or bool(hits)
