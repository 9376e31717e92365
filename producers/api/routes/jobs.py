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
from typing import Annotated, Any

import anyio.to_thread
from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import JSONResponse

from core import keys
from core.callbacks import redeliver
from core.errors import QuotaExceeded
from core.jobs import TERMINAL, BatchSubmission, Job, JobList, JobSubmission, Status
from core.queues import enqueue_callback, enqueue_jobs
from core.records import Record, to_view
from core.store import JobStore
from producers.api import batch_costs, costs, errors, quotas
from producers.api.access import hot_params, one_step
from producers.api.access.principal import JobsRead, JobsWrite
from producers.api.deps import (
    CeleryDep,
    Services,
    ServicesDep,
    StoreDep,
    services_of,
)
from producers.api.errors import ApiError
from producers.api.limits import reject_unknown_query
from producers.api.submission import checked_fields, queue_again, replicated, submit

log = logging.getLogger("courier.api.jobs")
router = APIRouter(prefix="/v1/jobs", tags=["jobs"], dependencies=[Depends(reject_unknown_query)])
# The two routes every producer calls most, matched first and checked in one dependency
# (producers/api/access/one_step.py).
hot = APIRouter(prefix="/v1/jobs", tags=["jobs"])

MAX_WAIT_S = 60
IdempotencyKey = Annotated[
    str | None, Header(alias="Idempotency-Key", min_length=1, max_length=255)
]
Wait = Annotated[
    float | None,
    Query(ge=0, le=MAX_WAIT_S, description="Hold the answer until the job ends or N s pass"),
]
IDEMPOTENCY_KEY = hot_params.declared("idempotency_key", IdempotencyKey)
WAIT = hot_params.declared("wait", Wait)

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


@hot.post(
    "",
    status_code=202,
    response_model=Job,
    summary="Submit a job",
    openapi_extra=one_step.security("jobs:write")
    | hot_params.documented([IDEMPOTENCY_KEY], body_schema="JobSubmission"),
    responses={
        200: {"model": Job, "description": "The job first submitted with this Idempotency-Key"},
        **errors.responses(400, 401, 403, 413, 422, 503),
        **costs.RESPONSES,
    },
)
async def submit_job(request: Request) -> JSONResponse:
    # Read by hand, as FastAPI would read `submission: JobSubmission`, the caller and
    # `idempotency_key: IdempotencyKey` (producers/api/access/hot_params.py).
    body = await hot_params.json_body(request)
    caller = await one_step.checked(request, "jobs:write")
    params = hot_params.Params(request)
    idempotency_key = params.value(IDEMPOTENCY_KEY)
    submission = params.body(JobSubmission, body)
    params.check()
    assert submission is not None
    return await submit(request, services_of(request), caller.tenant, submission, idempotency_key)


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
        fields = await checked_fields(job, services.settings)  # resolves callbacks off the loop
        fields |= costs.stored_fields(cost, tenant, job)
        items.append((fields, f"{idempotency_key}#{i}" if idempotency_key else None))
    await quotas.charge_submissions(services, tenant, len(items))
    records, created = await anyio.to_thread.run_sync(
        batch_costs.create_batch, services, tenant, batch.jobs, items, _create_batch
    )
    return JSONResponse(
        {"jobs": [to_view(record) for record in records]}, status_code=202 if created else 200
    )


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
    queue_again(store, services.celery, [job_id for job_id, created in outcomes if not created])
    replicated(store, [job_id for job_id, _ in outcomes])
    records = store.get_many(job_id for job_id, _ in outcomes)
    return records, bool(new)


@hot.get(
    "/{job_id}",
    response_model=Job,
    summary="Read a job, optionally waiting until it ends",
    openapi_extra=one_step.security("jobs:read") | hot_params.documented([WAIT]),
    responses=errors.responses(401, 403, 404, 422, 503),
)
async def get_job(request: Request, job_id: str) -> JSONResponse:
    # `wait` and the caller read by hand (producers/api/access/hot_params.py)
    caller = await one_step.checked(request, "jobs:read")
    params = hot_params.Params(request)
    wait: float | None = params.value(WAIT)
    params.check()
    services = services_of(request)

    async def read() -> Record | None:
        record: Record = await services.aredis.hgetall(keys.job(job_id))  # type: ignore[assignment]
        return record if record and record.get("tenant") == caller.tenant else None

    record, standing = None, None
    if wait:
        record = await services.waiter.wait(job_id, wait, read)
    if not wait or _waits_in_queue(record):  # the record and its queue standing: one call
        record, standing = await services.reader.read(
            job_id, time.time(), caller.tenant, services.settings.tenant_weights
        )
    if record is None or record.get("tenant") != caller.tenant:
        raise _not_found(job_id)
    view = to_view(record)
    if _waits_in_queue(record):
        view["queue"] = standing
    return JSONResponse(view)


def _waits_in_queue(record: Record | None) -> bool:
    return record is not None and record.get("status") == "queued" and not record.get("waiting_for")


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
    replicated(store, [job_id], "cancelled", hint="read the job to see whether the cancel held")
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
