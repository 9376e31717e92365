"""``/v1/jobs``: submit, read (with long-poll), list, cancel, redeliver (docs/contract.md,
HTTP API).

Routes that touch the sync job store are plain ``def`` (run in the threadpool); the read
route is async end to end (an async Redis client and the shared waiter), so a long-poll
holds no thread.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Mapping
from typing import Annotated, Any

import anyio.to_thread
from celery import Celery
from fastapi import APIRouter, Depends, Header, Query
from fastapi.responses import JSONResponse

from config.settings import Settings
from core import keys
from core.callbacks import redeliver
from core.errors import QuotaExceeded
from core.jobs import TERMINAL, BatchSubmission, Job, JobList, JobSubmission, Status, iso
from core.queues import enqueue_callback, enqueue_job, enqueue_jobs
from core.records import Record, to_view
from core.replication import Replicated
from core.ssrf import check_callback_url
from core.store import JobStore
from producers.api import batch_costs, conversations, costs, errors, quotas
from producers.api.access.principal import JobsRead, JobsWrite
from producers.api.deps import (
    CeleryDep,
    MetricsDep,
    Services,
    ServicesDep,
    SettingsDep,
    StoreDep,
)
from producers.api.errors import ApiError
from producers.api.limits import reject_unknown_query
from producers.api.queue_position import queue_position, start_rate

log = logging.getLogger("courier.api.jobs")
router = APIRouter(prefix="/v1/jobs", tags=["jobs"], dependencies=[Depends(reject_unknown_query)])

MAX_WAIT_S = 60
IdempotencyKey = Annotated[
    str | None, Header(alias="Idempotency-Key", min_length=1, max_length=255)
]
CANCELLED_ERROR = {"type": "cancelled", "message": "cancelled by the client", "retryable": False}


def _job(record: Record, status_code: int = 200) -> JSONResponse:
    return JSONResponse(to_view(record), status_code=status_code)


def _not_found(job_id: str) -> ApiError:
    return ApiError(404, f"no job {job_id!r}")


def _owned(store: JobStore, job_id: str, tenant: str) -> Record:
    """The tenant's job; another tenant's job is as unknown as a missing one."""
    record = store.get(job_id)
    if record is None or record.get("tenant") != tenant:
        raise _not_found(job_id)
    return record


@router.post(
    "",
    status_code=202,
    response_model=Job,
    summary="Submit a job",
    responses={
        200: {"model": Job, "description": "The job first submitted with this Idempotency-Key"},
        **errors.responses(400, 401, 403, 413, 422, 503),
        **costs.RESPONSES,
    },
)
def submit_job(
    submission: JobSubmission,
    caller: JobsWrite,
    _rate: quotas.SubmitRateDep,
    store: StoreDep,
    celery: CeleryDep,
    settings: SettingsDep,
    metrics: MetricsDep,
    services: ServicesDep,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    tenant = caller.tenant
    cost = services.cost
    costs.check_priced(cost, tenant, submission)
    fields = _job_fields(submission, settings) | costs.stored_fields(cost, tenant, submission)
    fields |= conversations.child_fields(store, tenant, submission, settings)
    if submission.cache is not None:
        found = cost.cache.create_from_cache(
            tenant, fields, submission.cache.ttl_s, idempotency_key, store.retention_s
        )
        if found.record is not None:
            _replicated(store, [found.record["id"]])  # an answer from the cache: a job too
            if submission.callback_url:
                batch_costs.send_callback(celery, found.record["id"])
            return _job(found.record, 202)
        if found.replay_id is not None:
            _replicated(store, [found.replay_id])
            return _job(store.get(found.replay_id) or _not_found_raise(found.replay_id))
    try:
        costs.check_budget(cost, tenant, costs.worst_nano(cost, submission))
    except ApiError:
        replayed = costs.replayed(store, tenant, idempotency_key)
        if replayed is None:
            raise
        _replicated(store, [replayed["id"]])
        return _job(replayed)
    try:
        job_id, created = store.create(
            tenant, fields, idempotency_key, quotas.max_unfinished(settings.tenant_max_unfinished)
        )
    except QuotaExceeded as exc:
        raise quotas.quota_error(tenant, exc) from None
    if created:
        try:
            if conversations.ready_to_queue(store, celery, job_id, tenant, fields):
                enqueue_job(celery, job_id, submission.priority)
        except Exception as exc:  # broker down: accept nothing that is not queued
            log.warning("enqueue of %s failed: %s", job_id, exc)
            store.delete(job_id, tenant)
            if idempotency_key:
                store.forget_idempotency(tenant, idempotency_key)
            raise errors.unavailable("the queue is unavailable; retry later") from None
        metrics.jobs_submitted.labels(submission.model, submission.priority, submission.kind).inc()
    else:
        _queue_again(store, celery, [job_id])
    _replicated(store, [job_id])
    record = store.get(job_id)
    if record is None:  # expired between the two calls: only an idempotent replay can race
        raise _not_found(job_id)
    return _job(record, 202 if created else 200)


@router.post(
    "/batch",
    status_code=202,
    response_model=JobList,
    summary="Submit up to 500 jobs at once, all or none",
    description="Each job is validated as by `POST /v1/jobs`; one invalid job refuses the "
    "batch (422, its index in the error's `loc`), and a refusal stores nothing. The jobs "
    "come back in the order sent. With `Idempotency-Key: K`, job *i* is keyed `K#i`, so a "
    "replayed batch returns the same jobs (200). Each job counts against the tenant's "
    "submission rate.",
    responses={
        200: {"model": JobList, "description": "The jobs first submitted with this key"},
        **errors.responses(400, 401, 403, 413, 422, 503),
        **costs.RESPONSES,
    },
)
async def submit_batch(
    batch: BatchSubmission,
    caller: JobsWrite,
    services: ServicesDep,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    tenant = caller.tenant
    cost = services.cost
    items = []
    for i, job in enumerate(batch.jobs):
        if job.parent_job_id is not None:
            raise ApiError(422, f"jobs[{i}]: parent_job_id is not taken in a batch; submit a "
                           "conversation's next turn with POST /v1/jobs")  # fmt: skip
        costs.check_priced(cost, tenant, job, where=f"jobs[{i}]: ")
        fields = _job_fields(job, services.settings) | costs.stored_fields(cost, tenant, job)
        items.append((fields, f"{idempotency_key}#{i}" if idempotency_key else None))
    await quotas.charge_submissions(services, tenant, len(items))
    records, created = await anyio.to_thread.run_sync(
        batch_costs.create_batch, services, tenant, batch.jobs, items, _create_batch
    )
    return JSONResponse(
        {"jobs": [to_view(record) for record in records]}, status_code=202 if created else 200
    )


def _not_found_raise(job_id: str) -> Record:
    raise _not_found(job_id)


def _job_fields(submission: JobSubmission, settings: Settings) -> dict[str, Any]:
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


def _create_batch(
    services: Services, tenant: str, items: list[tuple[dict[str, Any], str | None]]
) -> tuple[list[Record], bool]:
    """Store and enqueue a batch (in the threadpool): (records in order, any created)."""
    store, settings = services.store, services.settings
    try:
        outcomes = store.create_many(
            tenant, items, quotas.max_unfinished(settings.tenant_max_unfinished)
        )
    except QuotaExceeded as exc:
        raise quotas.quota_error(tenant, exc) from None
    new = [
        (job_id, fields, key)
        for (job_id, created), (fields, key) in zip(outcomes, items, strict=True)
        if created
    ]
    if new:
        try:
            enqueue_jobs(
                services.celery, [(job_id, fields["priority"]) for job_id, fields, _ in new]
            )
        except Exception as exc:  # broker down: accept nothing that is not queued
            log.warning("enqueue of a batch of %d failed: %s", len(new), exc)
            store.delete_many([(job_id, tenant) for job_id, _, _ in new])
            for _, _, key in new:
                if key:
                    store.forget_idempotency(tenant, key)
            raise errors.unavailable("the queue is unavailable; retry later") from None
        counts = Counter((f["model"], f["priority"], f["kind"]) for _, f, _ in new)
        for labels, count in counts.items():
            services.metrics.jobs_submitted.labels(*labels).inc(count)
    _queue_again(store, services.celery, [job_id for job_id, created in outcomes if not created])
    _replicated(store, [job_id for job_id, _ in outcomes])
    records = store.get_many(job_id for job_id, _ in outcomes)
    return records, bool(new)


def _queue_again(store: JobStore, celery: Celery, job_ids: list[str]) -> None:
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


SUBMIT_RETRY = "retry with the same Idempotency-Key to get this job back, not a second one"


def _replicated(
    store: JobStore, job_ids: list[str], status: str = "", hint: str = SUBMIT_RETRY
) -> None:
    """Acknowledge only what the configured replicas hold (README, High availability), else
    answer 503: the master has the change, but a failover now could lose it."""
    state = store.replication.confirm(job_ids, status)
    if state is Replicated.LAGGING:
        raise errors.unavailable(f"no Redis replica confirmed the change in time; {hint}")
    if state is Replicated.MISSING:
        raise errors.unavailable(f"the job store failed over during the request; {hint}")


@router.get(
    "/{job_id}",
    response_model=Job,
    summary="Read a job, optionally waiting until it ends",
    responses=errors.responses(401, 403, 404, 422, 503),
)
async def get_job(
    job_id: str,
    caller: JobsRead,
    services: ServicesDep,
    wait: Annotated[
        float | None,
        Query(ge=0, le=MAX_WAIT_S, description="Hold the answer until the job ends or N s pass"),
    ] = None,
) -> JSONResponse:
    async def read() -> Record | None:
        record: Record = await services.aredis.hgetall(keys.job(job_id))  # type: ignore[assignment]
        return record if record and record.get("tenant") == caller.tenant else None

    if wait:
        record = await services.waiter.wait(job_id, wait, read)
    else:
        record = await read()
    if record is None:
        raise _not_found(job_id)
    view = to_view(record)
    if record.get("status") == "queued" and not record.get("waiting_for"):
        view["queue"] = await anyio.to_thread.run_sync(
            queue_info, services.store, record, services.settings.tenant_weights
        )
    return JSONResponse(view)


def queue_info(
    store: JobStore, record: Record, weights: Mapping[str, float]
) -> dict[str, Any] | None:
    """Where a queued job stands: its place in its queue (in the fair order between tenants)
    and an estimated start from the cluster's start rate over the last minute (None while
    nothing has started lately)."""
    place = queue_position(
        store.redis,
        record["id"],
        record["priority"],
        record.get("tenant", ""),
        weights,
    )
    if place is None:
        return None
    position, ahead = place
    rate = start_rate(store.redis)
    eta = iso(time.time() + (ahead + 1) / rate) if rate > 0 else None
    return {"position": position, "ahead": ahead, "estimated_start_at": eta}


@router.get(
    "",
    response_model=JobList,
    summary="List the tenant's jobs, newest first",
    responses=errors.responses(401, 403, 422, 503),
)
def list_jobs(
    caller: JobsRead,
    store: StoreDep,
    status: Annotated[Status | None, Query(description="Only jobs with this status")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> JSONResponse:
    records = store.list_jobs(caller.tenant, status, limit)
    return JSONResponse({"jobs": [to_view(r) for r in records]})


@router.post(
    "/{job_id}/cancel",
    response_model=Job,
    summary="Cancel a job that has not ended",
    responses=errors.responses(401, 403, 404, 409, 422, 503),
)
def cancel_job(job_id: str, caller: JobsWrite, store: StoreDep, celery: CeleryDep) -> JSONResponse:
    record = _owned(store, job_id, caller.tenant)
    done, previous, callback_due = store.finish(
        job_id,
        "cancelled",
        allowed=("queued", "running"),
        fields={"error": CANCELLED_ERROR},
        record=record,
    )
    if not done:
        if previous == "missing":
            raise _not_found(job_id)
        raise ApiError(409, f"job {job_id} has already ended ({previous})", "conflict")
    _replicated(store, [job_id], "cancelled", hint="read the job to see whether the cancel held")
    if callback_due:
        try:
            enqueue_callback(celery, job_id)
        except Exception as exc:  # the store scheduled it too: the sweeper sends it later
            log.warning("enqueue of the callback of %s failed: %s", job_id, exc)
    return _job(store.get(job_id) or record)


@router.post(
    "/{job_id}/redeliver",
    response_model=Job,
    summary="Queue the job's webhook again",
    responses=errors.responses(401, 403, 404, 409, 422, 503),
)
def redeliver_callback(
    job_id: str, caller: JobsWrite, store: StoreDep, celery: CeleryDep
) -> JSONResponse:
    record = _owned(store, job_id, caller.tenant)
    if record.get("status") not in TERMINAL:
        raise ApiError(409, f"job {job_id} has not ended ({record.get('status')})", "conflict")
    if not record.get("callback_url"):
        raise ApiError(409, f"job {job_id} has no callback_url", "conflict")

    def enqueue(target: str) -> None:
        try:
            enqueue_callback(celery, target)
        except Exception as exc:  # pending and scheduled already: the sweeper sends it soon
            log.warning("enqueue of the callback of %s failed: %s", target, exc)

    redeliver(store, job_id, enqueue=enqueue)
    return _job(store.get(job_id) or record)
