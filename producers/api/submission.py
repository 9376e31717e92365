"""``POST /v1/jobs``, async end to end (docs/contract.md, HTTP API; README, Submitting).

A plain submission is one Redis call (:mod:`core.submit_script`): the tenant's rate, an
Idempotency-Key replay, the budget spent, the cap on unfinished jobs, the job stored and
counted, and — with the broker on the job store's Redis — its Celery message queued, all in
one atomic step. So the 202 comes only once the job is stored and queued, and a Redis that
cannot be reached (503) leaves nothing half-stored. What takes more stays off that path:

- a callback URL is resolved for the SSRF check in a thread (``getaddrinfo`` blocks);
- a submission asking for the cache looks it up first (one more call, in a thread);
- a broker elsewhere (RabbitMQ): the job is stored, then published through kombu in a
  thread, and deleted again if that fails;
- replicas to confirm (``COURIER_REDIS_MIN_REPLICAS``): ``WAIT`` in a thread;
- the budget directory, read again every few seconds, in a thread.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import anyio.to_thread
from celery import Celery
from fastapi import Request
from fastapi.responses import JSONResponse

from config.settings import Settings
from core import metrics as wm
from core.errors import QuotaExceeded
from core.jobs import JobSubmission
from core.queues import enqueue_job, enqueue_jobs
from core.records import Record, to_view
from core.replication import Replicated
from core.ssrf import check_callback_url
from core.store import JobStore
from core.submit_script import Limits, Outcome
from producers.api import batch_costs, conversations, costs, errors, quotas
from producers.api.deps import Services
from producers.api.errors import ApiError

log = logging.getLogger("courier.api.jobs")
SUBMIT_RETRY = "retry with the same Idempotency-Key to get this job back, not a second one"


async def submit(
    request: Request,
    services: Services,
    tenant: str,
    submission: JobSubmission,
    idempotency_key: str | None,
) -> JSONResponse:
    cost = services.cost
    cached = submission.cache is not None
    if cached:  # an answer from the cache counts against the rate too: take it first
        await quotas.charge_submissions(services, tenant, 1)
    if cost.budgets.stale():  # a Redis read every few seconds: not on the event loop
        await anyio.to_thread.run_sync(cost.budgets.get, tenant)
    costs.check_priced(cost, tenant, submission)
    fields = await checked_fields(submission, services.settings)
    fields |= costs.stored_fields(cost, tenant, submission)
    child = submission.parent_job_id is not None
    if child:  # a conversation's next turn: its parent read and checked (sync), in a thread
        fields |= await anyio.to_thread.run_sync(
            conversations.child_fields, services.store, tenant, submission, services.settings
        )
    if cached:
        answered = await anyio.to_thread.run_sync(
            answer_from_cache, services, tenant, fields, submission, idempotency_key
        )
        if answered is not None:
            return answered
    # A child is stored without a message: it meets its parent first (_publish).
    queues_itself = services.submitter.queues and not child
    outcome = await services.submitter.submit(
        tenant,
        fields,
        wm.field(submission.model, submission.priority, submission.kind) if queues_itself else "",
        idempotency_key,
        quotas.max_unfinished(services.settings.tenant_max_unfinished),
        _limits(services, tenant, submission, rate_taken=cached),
        queue=queues_itself,
    )
    record = outcome.record
    if outcome.kind == "created":
        if not queues_itself:
            record = await anyio.to_thread.run_sync(
                _publish, services, tenant, record, fields, submission, idempotency_key
            )
    elif outcome.kind == "replay":
        if services.store.replication.enabled:
            await anyio.to_thread.run_sync(
                queue_again, services.store, services.celery, [record["id"]]
            )
    else:
        raise _refusal(services, tenant, submission, outcome)
    if services.store.replication.enabled:
        await anyio.to_thread.run_sync(replicated, services.store, [record["id"]])
    # What the audit entry would otherwise read back from the job (producers.api.audit).
    request.state.audit_job = (record["id"], tenant, record["model"], record["priority"])
    return JSONResponse(to_view(record), status_code=202 if outcome.kind == "created" else 200)


def _limits(services: Services, tenant: str, submission: JobSubmission, rate_taken: bool) -> Limits:
    """What the SUBMIT script checks: the tenant's rate (unless taken already) and budget."""
    settings, cost = services.settings, services.cost
    rate = settings.tenant_submit_rate if settings.tenant_submit_rate > 0 else None
    rate = None if rate_taken else rate
    budget = cost.budgets.get(tenant)
    if budget is None:
        return Limits(rate, settings.tenant_submit_burst)
    return Limits(
        rate,
        settings.tenant_submit_burst,
        costs.spend_key(tenant, budget),
        costs.budget_nano(budget),
        costs.worst_nano(cost, submission),
    )


def _refusal(
    services: Services, tenant: str, submission: JobSubmission, outcome: Outcome
) -> ApiError:
    settings = services.settings
    if outcome.kind == "rate_limited":
        return quotas.rate_error(
            tenant, settings.tenant_submit_rate, settings.tenant_submit_burst, outcome.value
        )
    if outcome.kind == "quota_exceeded":
        exc = QuotaExceeded(int(outcome.value), settings.tenant_max_unfinished)
        return quotas.quota_error(tenant, exc)
    budget = services.cost.budgets.get(tenant)
    assert budget is not None and outcome.kind == "budget_exceeded"
    worst = costs.worst_nano(services.cost, submission)
    return costs.budget_error(tenant, budget, int(outcome.value), worst)


def _publish(
    services: Services,
    tenant: str,
    record: Record,
    fields: dict[str, Any],
    submission: JobSubmission,
    idempotency_key: str | None,
) -> Record:
    """Queue a stored job through kombu (a broker other than the job store's Redis, or a
    child job, queued only once its parent has succeeded); when that fails, undo the job so
    nothing is accepted that is not queued: 503. → the job as it is now (a child may wait
    for its parent, or have failed with it)."""
    store, job_id = services.store, record["id"]
    try:
        fields = {
            "parent_job_id": submission.parent_job_id,
            "callback_url": submission.callback_url,
        }
        if conversations.ready_to_queue(store, services.celery, job_id, tenant, fields):
            enqueue_job(services.celery, job_id, submission.priority)
    except Exception as exc:
        log.warning("enqueue of %s failed: %s", job_id, exc)
        store.delete(job_id, tenant)
        if idempotency_key:
            store.forget_idempotency(tenant, idempotency_key)
        raise errors.unavailable("the queue is unavailable; retry later") from None
    services.metrics.jobs_submitted.labels(
        submission.model, submission.priority, submission.kind
    ).inc()
    return store.get(job_id) or record


def answer_from_cache(
    services: Services,
    tenant: str,
    fields: dict[str, Any],
    submission: JobSubmission,
    idempotency_key: str | None,
) -> JSONResponse | None:
    """(In a thread.) The job created already succeeded from the cache, the job the
    Idempotency-Key made, or None on a miss (nothing stored)."""
    store, cost = services.store, services.cost
    assert submission.cache is not None
    found = cost.cache.create_from_cache(
        tenant, fields, submission.cache.ttl_s, idempotency_key, store.retention_s
    )
    if found.record is not None:
        replicated(store, [found.record["id"]])  # an answer from the cache: a job too
        if submission.callback_url:
            batch_costs.send_callback(services.celery, found.record["id"])
        return JSONResponse(to_view(found.record), status_code=202)
    if found.replay_id is not None:
        replicated(store, [found.replay_id])
        record = store.get(found.replay_id)
        if record is None:
            raise ApiError(404, f"no job {found.replay_id!r}")
        return JSONResponse(to_view(record))
    return None


async def checked_fields(submission: JobSubmission, settings: Settings) -> dict[str, Any]:
    """:func:`job_fields`; a callback URL's name is resolved in a thread."""
    if submission.callback_url is not None and not settings.callback_allow_private:
        return await anyio.to_thread.run_sync(job_fields, submission, settings)
    return job_fields(submission, settings)


def job_fields(submission: JobSubmission, settings: Settings) -> dict[str, Any]:
    """The stored fields of a submitted job; 422 for a callback URL Courier will not call."""
    if submission.callback_url is not None:
        try:
            check_callback_url(
                submission.callback_url,
                settings.callback_allow_private,
                require_https=settings.callbacks_need_https,
            )
        except ValueError as exc:
            raise ApiError(422, str(exc)) from None
    return {
        "model": submission.model,
        "kind": submission.kind,
        "stream": "1" if submission.stream else "",
        "priority": submission.priority,
        "request": submission.request,
        "callback_url": submission.callback_url,
        "fallback_models": submission.fallback_models,
        "metadata": submission.metadata,
        "max_attempts": submission.max_attempts,
        "timeout_s": submission.timeout_s,
        "expires_at": time.time() + submission.expires_in_s if submission.expires_in_s else None,
    }


def queue_again(store: JobStore, celery: Celery, job_ids: list[str]) -> None:
    """Where replicas confirm submissions: a replayed submission of a job still queued and
    not marked ``enqueued`` (the confirmation marks it, after the enqueue) puts its message
    on the queue. The first attempt was cut off between storing the job and queueing it (an
    outage, a failover) and answered 503, so the job has no message; the client's retry with
    the same Idempotency-Key then makes it run at once, not after the sweeper's orphan check
    (90 s). A job marked ``enqueued`` is never queued twice."""
    if not job_ids or not store.replication.enabled:
        return
    waiting = [
        (record["id"], record.get("priority", "normal"))
        for record in store.get_many(job_ids)
        if record.get("status") == "queued"
        and not record.get("waiting_for")
        and not record.get("enqueued")
    ]
    if waiting:
        try:
            enqueue_jobs(celery, waiting)
        except Exception as exc:  # the job stays stored: a later retry queues it
            log.warning("enqueue of %d replayed job(s) failed: %s", len(waiting), exc)
            raise errors.unavailable("the queue is unavailable; retry later") from None


def replicated(
    store: JobStore, job_ids: list[str], status: str = "", hint: str = SUBMIT_RETRY
) -> None:
    """Acknowledge only what the configured replicas hold (README, High availability), else
    answer 503: the master has the change, but a failover now could lose it."""
    state = store.replication.confirm(job_ids, status)
    if state is Replicated.LAGGING:
        raise errors.unavailable(f"no Redis replica confirmed the change in time; {hint}")
    if state is Replicated.MISSING:
        raise errors.unavailable(f"the job store failed over during the request; {hint}")
