"""``GET /v1/jobs/{id}/events``: the job's events as Server-Sent Events (docs/contract.md,
Live events and streaming).

Async end to end: the stored events are read with ``XRANGE`` on the async Redis client,
live ones come from the process's :class:`~producers.api.live.EventHub`; an open stream
holds a coroutine and a small queue, no thread and no Redis connection of its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import StreamingResponse

from core import keys
from core.events import (
    DELTA,
    KEEPALIVE_FRAME,
    TERMINAL_EVENTS,
    JobEvent,
    entry_id,
    from_entry,
    parse_event_id,
    sse_frame,
)
from core.jobs import TERMINAL
from core.records import Record, to_view
from producers.api import errors
from producers.api.access.principal import JobsRead
from producers.api.deps import Services, ServicesDep
from producers.api.errors import ApiError
from producers.api.limits import reject_unknown_query
from producers.api.live import KEEPALIVE_S, EventHub, Reader

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], dependencies=[Depends(reject_unknown_query)])

PAGE = 500  # stored events read per XRANGE


def event_id_schema(schema: dict[str, Any]) -> None:
    """An event id in OpenAPI: digits, or absent (never null). Checked by the route itself:
    a malformed one is a 400, not a 422."""
    schema.pop("anyOf", None)
    schema.update(type="string", pattern="^[0-9]{1,18}$")


SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
DESCRIPTION = """Server-Sent Events, each with an `id:` (increasing within the job), an
`event:` and one JSON `data:` line: `job.status` `{status, attempt, waiting_for, model, at}`
on every change; `output.delta` `{attempt, model, text}` (jobs submitted with
`"stream": true`); `output.reset` `{attempt, reason}` (the partial output so far is void);
then one of `job.succeeded`, `job.failed`, `job.cancelled`, `job.expired` with the job as
`GET /v1/jobs/{id}` shows it, after which the server closes the stream. `Last-Event-ID` (or
`?after=`) resumes after that id, with no gap and no duplicate. A comment line every 15 s
keeps an idle stream open."""


@router.get(
    "/{job_id}/events",
    summary="Follow a job's events (SSE)",
    description=DESCRIPTION,
    response_class=StreamingResponse,
    responses={
        200: {"content": {"text/event-stream": {"schema": {"type": "string"}}}},
        **errors.responses(400, 401, 403, 404, 422, 503),
    },
)
async def job_events(
    job_id: str,
    request: Request,
    caller: JobsRead,
    services: ServicesDep,
    after: Annotated[
        str | None,
        Query(
            description="Replay the events after this id (as Last-Event-ID); 400 if malformed",
            json_schema_extra=event_id_schema,
        ),
    ] = None,
    last_event_id: Annotated[
        str | None,
        Header(
            alias="Last-Event-ID",
            description="The last event id received; 400 if malformed",
            json_schema_extra=event_id_schema,
        ),
    ] = None,
) -> StreamingResponse:
    raw = last_event_id if last_event_id is not None else after
    try:
        start = parse_event_id(raw) if raw is not None else 0
    except ValueError as exc:
        raise ApiError(400, f"malformed event id: {exc}") from None
    owner = await services.aredis.hget(keys.job(job_id), "tenant")  # type: ignore[misc]
    if owner != caller.tenant:
        raise ApiError(404, f"no job {job_id!r}")
    hub: EventHub = request.app.state.hub
    return StreamingResponse(
        _events(services, hub, job_id, start), media_type="text/event-stream", headers=SSE_HEADERS
    )


async def _events(
    services: Services, hub: EventHub, job_id: str, after: int
) -> AsyncIterator[bytes]:
    reader = await hub.subscribe(job_id)
    try:
        async for frame in _follow(services, reader, job_id, after):
            yield frame
    finally:
        hub.unsubscribe(reader)


async def _follow(
    services: Services, reader: Reader, job_id: str, last: int
) -> AsyncIterator[bytes]:
    """The job's events after ``last``: the stored ones, then the live ones, until the
    terminal event. Re-reads the stored events whenever live ones may have been lost, and
    at every keep-alive (so nothing is missed for longer than that)."""
    aredis = services.aredis
    stream = keys.job_events(job_id)
    opening = True
    while True:
        reader.queue.clear()
        reader.resync = False
        while True:  # the stored events after `last`
            entries: list[tuple[str, dict[str, str]]] = await aredis.xrange(  # type: ignore[assignment]
                stream, min=entry_id(last + 1), count=PAGE
            )
            for stream_id, fields in entries:
                event = from_entry(stream_id, fields)
                yield await _frame(services, job_id, event)
                last = event.id
                if event.terminal:
                    return
            if len(entries) < PAGE:
                break
        record: Record = await aredis.hgetall(keys.job(job_id))  # type: ignore[misc,assignment]
        if not record:
            return  # gone (past its retention)
        if opening and record.get("status") in TERMINAL:
            newest: list[tuple[str, dict[str, str]]] = await aredis.xrevrange(stream, count=1)  # type: ignore[assignment]
            if not (newest and from_entry(*newest[0]).terminal):
                for frame in _unrecorded_ending(record, last):
                    yield frame
            return
        opening = False
        while True:  # the live events
            if not reader.queue:
                reader.wake.clear()
                try:
                    async with asyncio.timeout(KEEPALIVE_S):
                        await reader.wake.wait()
                except TimeoutError:
                    yield KEEPALIVE_FRAME
                    break
            if reader.resync:
                break
            gap = False
            while reader.queue:
                event = reader.queue.popleft()
                if event.id <= last:
                    continue
                if event.id != last + 1:
                    gap = True
                    break
                yield await _frame(services, job_id, event)
                last = event.id
                if event.terminal:
                    return
            if gap:
                break


def _unrecorded_ending(record: Record, last: int) -> list[bytes]:
    """The events of a job that ended without recording them: answered from the answer
    cache at submission (core.cache), or ended before events were kept. A streamed one's
    output as one delta (id 1), then its ending; ids as a replay would give them."""
    view = to_view(record)
    out: list[bytes] = []
    result = view.get("result") or {}
    if view.get("stream") and result.get("output"):
        if last < 1:
            data = {"attempt": view.get("attempts") or 0, "model": result.get("model"),
                    "text": result["output"]}  # fmt: skip
            out.append(sse_frame(1, DELTA, data))
        last = max(last, 1)
    out.append(sse_frame(last + 1, f"job.{record['status']}", view))
    return out


async def _frame(services: Services, job_id: str, event: JobEvent) -> bytes:
    if event.event in TERMINAL_EVENTS:
        record: Record = await services.aredis.hgetall(keys.job(job_id))  # type: ignore[misc,assignment]
        return sse_frame(event.id, event.event, to_view(record) if record else {"id": job_id})
    return sse_frame(event.id, event.event, event.data())
