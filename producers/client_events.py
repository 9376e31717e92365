"""A job's events for the Python client (``Courier.events``, ``AsyncCourier.events``):
``GET /v1/jobs/{id}/events`` read with ``httpx-sse`` into :class:`JobEvent` objects until the
terminal one, reconnecting after a dropped connection (or a 502/503/504) with
``Last-Event-ID``, so no event is missed or repeated (docs/contract.md, Live events).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
from httpx_sse import ServerSentEvent, aconnect_sse, connect_sse

from core.jobs import TERMINAL

TERMINAL_EVENTS = frozenset(f"job.{status}" for status in TERMINAL)
# A stream sends a comment every 15 s at least: a read that waits longer has lost it.
READ_TIMEOUT_S = 45.0
RECONNECT_PAUSE_S = 1.0

Check = Callable[[httpx.Response], Any]  # raises CourierAPIError for an error answer
Transient = Callable[[Exception], bool]  # worth reconnecting after


@dataclass(frozen=True, slots=True)
class JobEvent:
    """One event of a job."""

    id: int
    event: str  # job.status | output.delta | output.reset | job.succeeded | job.failed | …
    data: dict[str, Any]

    @property
    def terminal(self) -> bool:
        """The job's last event: ``data`` is the job."""
        return self.event in TERMINAL_EVENTS


def _event(sse: ServerSentEvent) -> JobEvent:
    return JobEvent(int(sse.id), sse.event, sse.json())


def _headers(last: int | None) -> dict[str, str]:
    return {"Last-Event-ID": str(last)} if last is not None else {}


def follow(
    http: httpx.Client,
    path: str,
    after: int | None,
    timeout: float,
    check: Check,
    transient: Transient,
) -> Iterator[JobEvent]:
    last = after
    limits = httpx.Timeout(timeout, read=READ_TIMEOUT_S)
    while True:
        try:
            with connect_sse(http, "GET", path, headers=_headers(last), timeout=limits) as source:
                if not source.response.is_success:
                    source.response.read()
                    check(source.response)
                for sse in source.iter_sse():
                    event = _event(sse)
                    last = event.id
                    yield event
                    if event.terminal:
                        return
        except Exception as exc:
            if not transient(exc):
                raise
        time.sleep(RECONNECT_PAUSE_S)


async def afollow(
    http: httpx.AsyncClient,
    path: str,
    after: int | None,
    timeout: float,
    check: Check,
    transient: Transient,
) -> AsyncIterator[JobEvent]:
    last = after
    limits = httpx.Timeout(timeout, read=READ_TIMEOUT_S)
    while True:
        try:
            async with aconnect_sse(
                http, "GET", path, headers=_headers(last), timeout=limits
            ) as source:
                if not source.response.is_success:
                    await source.response.aread()
                    check(source.response)
                async for sse in source.aiter_sse():
                    event = _event(sse)
                    last = event.id
                    yield event
                    if event.terminal:
                        return
        except Exception as exc:
            if not transient(exc):
                raise
        await asyncio.sleep(RECONNECT_PAUSE_S)
