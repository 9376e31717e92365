"""What :class:`~producers.client.Courier` and :class:`~producers.async_client.AsyncCourier`
share: the submission body, reading an answer, when to retry, and the client's settings."""

from __future__ import annotations

import uuid
from typing import Any, TypedDict, Unpack
from urllib.parse import quote

import httpx

from config.settings import Settings
from producers.client_auth import ClientCredentials
from producers.client_errors import CourierAPIError

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


def period_params(period: str | None) -> dict[str, str]:
    return {"period": period} if period else {}


def transient(exc: Exception) -> bool:
    if isinstance(exc, CourierAPIError):
        return exc.status in RETRY_STATUSES
    return isinstance(exc, httpx.TransportError)


def pause_before_retry(exc: Exception, remaining: float) -> float | None:
    """How long to wait before sending a submission again (its Retry-After, else a second),
    or None: not transient, or no time left."""
    if not transient(exc) or remaining <= 0:
        return None
    after = exc.retry_after if isinstance(exc, CourierAPIError) else None
    return min(max(after or RETRY_PAUSE_S, 0.05), remaining)


def submission_key(idempotency_key: str | None, retry_s: float) -> str | None:
    """The Idempotency-Key of every attempt: one is needed to retry safely."""
    if idempotency_key or retry_s <= 0:
        return idempotency_key
    return f"courier-client-{uuid.uuid4().hex}"


class ClientBase:
    """What the sync and async clients share: where, as whom, and the requests' shapes."""

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
