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

import asyncio
import builtins
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator
from types import TracebackType
from typing import Any, Self, TypedDict, Unpack
from urllib.parse import quote

import httpx

from config.settings import Settings
from core.jobs import TERMINAL
from producers.client_auth import ClientCredentials
from producers.client_errors import CourierAPIError
from producers.client_events import JobEvent, afollow, follow

__all__ = [
    "AsyncCourier",
    "ClientCredentials",
    "Courier",
    "CourierAPIError",
    "JobEvent",
    "JobWaitTimeout",
]

MAX_WAIT_S = 60.0
RETRY_STATUSES = frozenset({502, 503, 504})
RETRY_PAUSE_S = 1.0
Job = dict[str, Any]


class JobWaitTimeout(TimeoutError):
    """``wait`` gave up before the job ended; ``job`` is how it last stood."""

    def __init__(self, job: Job) -> None:
        super().__init__(f"job {job.get('id')} still {job.get('status')}")
        self.job = job


class JobOptions(TypedDict, total=False):
    """A submission's keyword arguments besides ``model`` and ``request`` (docs/contract.md,
    The job)."""

    prompt: str | None  # shorthand for a one-message chat (or one-text embedding) request
    kind: str  # "chat" (default) or "embedding"
    priority: str | None
    callback_url: str | None
    fallback_models: list[str] | None
    metadata: dict[str, Any] | None
    max_attempts: int | None
    timeout_s: float | None
    expires_in_s: float | None
    cache: dict[str, int] | None  # {"ttl_s": N}: answer from an identical job of the last N s
    stream: bool | None  # chat only: stream the output into the job's events
    parent_job_id: str | None  # continue that earlier job's conversation


def submission_body(
    model: str, request: dict[str, Any] | None = None, **options: Unpack[JobOptions]
) -> dict[str, Any]:
    """The JSON body of ``POST /v1/jobs``; ``prompt`` is shorthand for a one-message
    chat request (or a one-text embedding request)."""
    prompt = options.pop("prompt", None)
    kind = options.pop("kind", "chat")
    if request is None:
        if prompt is None:
            raise ValueError("give request= or prompt=")
        request = (
            {"input": [prompt]}
            if kind == "embedding"
            else {"messages": [{"role": "user", "content": prompt}]}
        )
    body: dict[str, Any] = {"model": model, "kind": kind, "request": request}
    body.update({k: v for k, v in options.items() if v is not None})
    return body


def parse(response: httpx.Response) -> Any:
    """The JSON of a 2xx answer; ``CourierAPIError`` for anything else."""
    if response.is_success:
        return response.json()
    try:
        error = response.json()["error"]
        kind, message = str(error["type"]), str(error["message"])
    except (ValueError, KeyError, TypeError):
        kind, message = "http_error", response.text[:500] or response.reason_phrase
    try:
        retry_after: float | None = float(response.headers.get("retry-after", ""))
    except ValueError:
        retry_after = None
    raise CourierAPIError(response.status_code, kind, message, retry_after)


def job_path(job_id: str, suffix: str = "") -> str:
    return f"/v1/jobs/{quote(job_id, safe='')}{suffix}"


def _period(period: str | None) -> dict[str, str]:
    return {"period": period} if period else {}


def _transient(exc: Exception) -> bool:
    if isinstance(exc, CourierAPIError):
        return exc.status in RETRY_STATUSES
    return isinstance(exc, httpx.TransportError)


def _pause_before_retry(exc: Exception, remaining: float) -> float | None:
    """How long to wait before sending a submission again (its Retry-After, else a second),
    or None: not transient, or no time left."""
    if not _transient(exc) or remaining <= 0:
        return None
    after = exc.retry_after if isinstance(exc, CourierAPIError) else None
    return min(max(after or RETRY_PAUSE_S, 0.05), remaining)


def _submission_key(idempotency_key: str | None, retry_s: float) -> str | None:
    """The Idempotency-Key of every attempt: one is needed to retry safely."""
    if idempotency_key or retry_s <= 0:
        return idempotency_key
    return f"courier-client-{uuid.uuid4().hex}"


class _Base:
    def __init__(
        self,
        base_url: str | None,
        api_key: str | None,
        timeout: float,
        client_id: str | None = None,
        client_secret: str | None = None,
        scope: str | None = None,
    ) -> None:
        oauth = client_id is not None or client_secret is not None
        if base_url is None or (api_key is None and not oauth):
            settings = Settings()
            base_url = base_url or settings.api_url
            if not oauth:
                api_key = api_key or settings.api_key
                if api_key is None and settings.client_id and settings.client_secret:
                    client_id, client_secret = settings.client_id, settings.client_secret
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.auth: ClientCredentials | None = None
        if client_id or client_secret:
            if api_key or not (client_id and client_secret):
                raise ValueError("give api_key, or client_id with client_secret")
            token_url = f"{self.base_url}/oauth/token"
            self.auth = ClientCredentials(token_url, client_id, client_secret, scope)

    def _get_args(self, wait: float | None) -> tuple[dict[str, Any], float]:
        if wait is None:
            return {}, self.timeout
        wait = max(0.0, min(MAX_WAIT_S, wait))
        return {"wait": wait}, self.timeout + wait

    @staticmethod
    def _list_params(status: str | None, limit: int) -> dict[str, Any]:
        return {"limit": limit, **({"status": status} if status else {})}

    @staticmethod
    def _submit_headers(idempotency_key: str | None) -> dict[str, str]:
        return {"Idempotency-Key": idempotency_key} if idempotency_key else {}


class Courier(_Base):
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
        headers = self._submit_headers(_submission_key(idempotency_key, retry_s))
        deadline = time.monotonic() + retry_s
        while True:
            try:
                return parse(self.http.post(path, json=body, headers=headers))
            except (CourierAPIError, httpx.TransportError) as exc:
                pause = _pause_before_retry(exc, deadline - time.monotonic())
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
                if not _transient(exc):
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
        return follow(self.http, path, after, self.timeout, parse, _transient)

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
        report: dict[str, Any] = parse(self.http.get("/v1/usage", params=_period(period)))
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


class AsyncCourier(_Base):
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
        headers = self._submit_headers(_submission_key(idempotency_key, retry_s))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + retry_s
        while True:
            try:
                return parse(await self.http.post(path, json=body, headers=headers))
            except (CourierAPIError, httpx.TransportError) as exc:
                pause = _pause_before_retry(exc, deadline - loop.time())
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
                if not _transient(exc):
                    raise
                await asyncio.sleep(min(RETRY_PAUSE_S, max(0.0, remaining)))
                continue
            if job.get("status") in TERMINAL:
                return job

    def events(self, job_id: str, after: int | None = None) -> AsyncIterator[JobEvent]:
        """The async twin of :meth:`Courier.events` (``async for event in ...``)."""
        path = job_path(job_id, "/events")
        return afollow(self.http, path, after, self.timeout, parse, _transient)

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
        report: dict[str, Any] = parse(await self.http.get("/v1/usage", params=_period(period)))
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
