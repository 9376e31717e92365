"""The Python client of Courier's HTTP API (docs/contract.md, HTTP API), sync and async.

>>> with Courier() as courier:                      # COURIER_API_URL, COURIER_API_KEY
...     job = courier.submit("openai:gpt-4o-mini", prompt="Hi")
...     job = courier.wait(job["id"], timeout=300)

As an OAuth2 client instead of with an API key (``COURIER_CLIENT_ID``,
``COURIER_CLIENT_SECRET``), it fetches and refreshes its access token itself:

>>> Courier(client_id="cli_...", client_secret="cs_...", scope="jobs:write jobs:read")

Every method returns the job (or ``{"jobs": [...]}``) as the API shows it, and raises
``CourierAPIError(status, type, message)`` for an error answer. ``wait`` loops on
``?wait=`` (the server holds each request up to 60 s) until the job ends; transient
errors (connection refused, 502/503/504) are retried until its deadline. ``submit`` and
``submit_many`` retry them too for ``retry_s`` seconds (a Redis failover answers 503 with
``Retry-After`` for a few seconds), with one Idempotency-Key for every attempt (generated
when none is given), so a retry never makes a second job.

``submit(..., parent_job_id=...)`` continues an earlier job's conversation; ``conversation``
reads a job's transcript (docs/contract.md, Conversations):

>>> reply = courier.submit("anthropic:claude-haiku-4-5", prompt="And then?",
...                        parent_job_id=job["id"])
>>> courier.conversation(reply["id"])["messages"]

``events`` follows a job's events (``GET /v1/jobs/{id}/events``) as :class:`JobEvent`
objects until the terminal one; a dropped connection is resumed after the last event
received (``Last-Event-ID``), so no event is missed or repeated:

>>> for event in courier.events(job["id"]):
...     if event.event == "output.delta":
...         print(event.data["text"], end="")
"""

from __future__ import annotations

import builtins
import time
from collections.abc import Iterable, Iterator
from types import TracebackType
from typing import Any, Self, Unpack

import httpx

from core.jobs import TERMINAL
from producers.async_client import AsyncCourier
from producers.client_auth import ClientCredentials
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
from producers.client_events import JobEvent, follow

__all__ = [
    "AsyncCourier",
    "ClientCredentials",
    "Courier",
    "CourierAPIError",
    "Job",
    "JobEvent",
    "JobWaitTimeout",
    "submission_body",
]


class Courier(ClientBase):
    """A sync client; a context manager closing its connection pool."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        *,
        client_id: str | None = None,
        client_secret: str | None = None,
        scope: str | None = None,
    ) -> None:
        super().__init__(base_url, api_key, timeout, client_id, client_secret, scope)
        self.http = httpx.Client(
            base_url=self.base_url,
            headers=self.headers,
            timeout=timeout,
            transport=transport,
            auth=self.auth,
        )

    def submit(
        self,
        model: str,
        request: dict[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
        retry_s: float = 0.0,
        **options: Unpack[JobOptions],
    ) -> Job:
        body = submission_body(model, request, **options)
        job: Job = self._post("/v1/jobs", body, idempotency_key, retry_s)
        return job

    def submit_many(
        self,
        jobs: Iterable[dict[str, Any]],
        idempotency_key: str | None = None,
        retry_s: float = 0.0,
    ) -> builtins.list[Job]:
        """Submit up to 500 bodies (see :func:`submission_body`) in one request, all or none;
        the jobs come back in order."""
        batch = self._post("/v1/jobs/batch", {"jobs": list(jobs)}, idempotency_key, retry_s)
        return list(batch["jobs"])

    def _post(self, path: str, body: Any, idempotency_key: str | None, retry_s: float) -> Any:
        headers = self._submit_headers(submission_key(idempotency_key, retry_s))
        deadline = time.monotonic() + retry_s
        while True:
            try:
                return parse(self.http.post(path, json=body, headers=headers))
            except (CourierAPIError, httpx.TransportError) as exc:
                pause = pause_before_retry(exc, deadline - time.monotonic())
                if pause is None:
                    raise
                time.sleep(pause)

    def get(self, job_id: str, wait: float | None = None) -> Job:
        params, timeout = self._get_args(wait)
        job: Job = parse(self.http.get(job_path(job_id), params=params, timeout=timeout))
        return job

    def wait(self, job_id: str, timeout: float | None = None) -> Job:
        """The job once it has ended; ``JobWaitTimeout`` after ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        job: Job = {"id": job_id, "status": "unknown"}
        while True:
            remaining = MAX_WAIT_S if deadline is None else deadline - time.monotonic()
            if remaining <= 0:
                raise JobWaitTimeout(job)
            try:
                job = self.get(job_id, wait=min(MAX_WAIT_S, remaining))
            except (CourierAPIError, httpx.TransportError) as exc:
                if not transient(exc):
                    raise
                time.sleep(min(RETRY_PAUSE_S, max(0.0, remaining)))
                continue
            if job.get("status") in TERMINAL:
                return job

    def events(self, job_id: str, after: int | None = None) -> Iterator[JobEvent]:
        """The job's events after ``after`` (all of them when None), until its terminal
        event; reconnects after a dropped connection or a 502/503/504, resuming after the
        last event received."""
        path = job_path(job_id, "/events")
        return follow(self.http, path, after, self.timeout, parse, transient)

    def conversation(self, job_id: str) -> dict[str, Any]:
        """The job's conversation: ``{"conversation_id", "messages"}``, root first, each
        message with the ``job_id`` that added it, up to and including this job's reply."""
        transcript: dict[str, Any] = parse(self.http.get(job_path(job_id, "/conversation")))
        return transcript

    def cancel(self, job_id: str) -> Job:
        job: Job = parse(self.http.post(job_path(job_id, "/cancel")))
        return job

    def redeliver(self, job_id: str) -> Job:
        job: Job = parse(self.http.post(job_path(job_id, "/redeliver")))
        return job

    def list(self, status: str | None = None, limit: int = 50) -> builtins.list[Job]:
        answer = parse(self.http.get("/v1/jobs", params=self._list_params(status, limit)))
        jobs: builtins.list[Job] = answer["jobs"]
        return jobs

    def usage(self, period: str | None = None) -> dict[str, Any]:
        """What the tenant spent in ``period`` (``day``, ``month``, ``total``; default: its
        budget's period, else ``month``), against its budget, by model."""
        report: dict[str, Any] = parse(self.http.get("/v1/usage", params=period_params(period)))
        return report

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
