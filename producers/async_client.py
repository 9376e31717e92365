"""The async twin of the Python client (:class:`~producers.client.Courier`): the same methods
with ``await``, ``events`` as an async iterator (docs/contract.md, Python client)."""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import AsyncIterator, Iterable
from types import TracebackType
from typing import Any, Self, Unpack

import httpx

from core.jobs import TERMINAL
from producers.client_base import (
    MAX_WAIT_S,
    RETRY_PAUSE_S,
    ClientBase,
    Job,
    JobOptions,
    JobWaitTimeout,
    job_path,
    parse,
    pause_before_retry,
    period_params,
    submission_body,
    submission_key,
    transient,
)
from producers.client_errors import CourierAPIError
from producers.client_events import JobEvent, afollow


class AsyncCourier(ClientBase):
    """The async twin of :class:`Courier` (``async with AsyncCourier() as courier``)."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
        *,
        client_id: str | None = None,
        client_secret: str | None = None,
        scope: str | None = None,
    ) -> None:
        super().__init__(base_url, api_key, timeout, client_id, client_secret, scope)
        self.http = httpx.AsyncClient(
            base_url=self.base_url,
            headers=self.headers,
            timeout=timeout,
            transport=transport,
            auth=self.auth,
        )

    async def submit(
        self,
        model: str,
        request: dict[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
        retry_s: float = 0.0,
        **options: Unpack[JobOptions],
    ) -> Job:
        body = submission_body(model, request, **options)
        job: Job = await self._post("/v1/jobs", body, idempotency_key, retry_s)
        return job

    async def submit_many(
        self,
        jobs: Iterable[dict[str, Any]],
        idempotency_key: str | None = None,
        retry_s: float = 0.0,
    ) -> builtins.list[Job]:
        """Submit up to 500 bodies (see :func:`submission_body`) in one request, all or none;
        the jobs come back in order."""
        body = {"jobs": list(jobs)}
        batch = await self._post("/v1/jobs/batch", body, idempotency_key, retry_s)
        return list(batch["jobs"])

    async def _post(self, path: str, body: Any, idempotency_key: str | None, retry_s: float) -> Any:
        headers = self._submit_headers(submission_key(idempotency_key, retry_s))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + retry_s
        while True:
            try:
                return parse(await self.http.post(path, json=body, headers=headers))
            except (CourierAPIError, httpx.TransportError) as exc:
                pause = pause_before_retry(exc, deadline - loop.time())
                if pause is None:
                    raise
                await asyncio.sleep(pause)

    async def get(self, job_id: str, wait: float | None = None) -> Job:
        params, timeout = self._get_args(wait)
        response = await self.http.get(job_path(job_id), params=params, timeout=timeout)
        job: Job = parse(response)
        return job

    async def wait(self, job_id: str, timeout: float | None = None) -> Job:
        """The job once it has ended; ``JobWaitTimeout`` after ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        job: Job = {"id": job_id, "status": "unknown"}
        while True:
            remaining = MAX_WAIT_S if deadline is None else deadline - loop.time()
            if remaining <= 0:
                raise JobWaitTimeout(job)
            try:
                job = await self.get(job_id, wait=min(MAX_WAIT_S, remaining))
            except (CourierAPIError, httpx.TransportError) as exc:
                if not transient(exc):
                    raise
                await asyncio.sleep(min(RETRY_PAUSE_S, max(0.0, remaining)))
                continue
            if job.get("status") in TERMINAL:
                return job

    def events(self, job_id: str, after: int | None = None) -> AsyncIterator[JobEvent]:
        """The async twin of :meth:`Courier.events` (``async for event in ...``)."""
        path = job_path(job_id, "/events")
        return afollow(self.http, path, after, self.timeout, parse, transient)

    async def conversation(self, job_id: str) -> dict[str, Any]:
        """See :meth:`Courier.conversation`."""
        path = job_path(job_id, "/conversation")
        transcript: dict[str, Any] = parse(await self.http.get(path))
        return transcript

    async def cancel(self, job_id: str) -> Job:
        job: Job = parse(await self.http.post(job_path(job_id, "/cancel")))
        return job

    async def redeliver(self, job_id: str) -> Job:
        job: Job = parse(await self.http.post(job_path(job_id, "/redeliver")))
        return job

    async def list(self, status: str | None = None, limit: int = 50) -> builtins.list[Job]:
        answer = parse(await self.http.get("/v1/jobs", params=self._list_params(status, limit)))
        jobs: builtins.list[Job] = answer["jobs"]
        return jobs

    async def usage(self, period: str | None = None) -> dict[str, Any]:
        """What the tenant spent in ``period``, against its budget, by model."""
        report: dict[str, Any] = parse(
            await self.http.get("/v1/usage", params=period_params(period))
        )
        return report

    async def aclose(self) -> None:
        await self.http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
