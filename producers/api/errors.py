"""Every error the API answers, in the contract's body: ``{"error": {"type", "message"}}``
(docs/contract.md, HTTP API).

``ApiError`` is the one exception routes raise (an ``HTTPException`` with an error type);
the handlers below turn it, Starlette's own 404/405, validation errors and Redis outages
into that body. ``RESPONSES`` declares the same shapes in OpenAPI.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any

import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException

log = logging.getLogger("courier.api")

TYPES_BY_STATUS = {
    400: "invalid_request",
    401: "authentication",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "invalid_request",
    422: "invalid_request",
    429: "rate_limited",
    503: "unavailable",
}


class ErrorDetail(BaseModel):
    type: str
    message: str


class ErrorBody(BaseModel):
    error: ErrorDetail


class ApiError(HTTPException):
    """An error answered in the contract's body, with an explicit error type."""

    def __init__(
        self,
        status_code: int,
        message: str,
        type: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(status_code, message, dict(headers) if headers else None)
        self.type = type or TYPES_BY_STATUS.get(status_code, "error")


def unavailable(message: str, retry_after_s: int = 1) -> ApiError:
    """503 with ``Retry-After``: the job store or the queue cannot take this now."""
    return ApiError(503, message, headers={"Retry-After": str(retry_after_s)})


def error_response(
    status: int, type: str, message: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    body = {"error": {"type": type, "message": message}}
    return JSONResponse(body, status_code=status, headers=dict(headers) if headers else None)


def _describe(errors: Sequence[Any]) -> tuple[int, str]:
    """Pydantic/FastAPI errors → (status, one readable message naming each field)."""
    parts: list[str] = []
    status = 422
    for error in errors[:5]:
        loc = [str(p) for p in error.get("loc", ())]
        if error.get("type") == "json_invalid":
            status = 400
            reason = (error.get("ctx") or {}).get("error", "malformed")
            parts.append(f"the body is not valid JSON ({reason})")
            continue
        if loc[:1] == ["body"] and len(loc) == 1 and error.get("type") == "model_attributes_type":
            parts.append("the body must be a JSON object")
            continue
        where = ".".join(loc[1:] if loc[:1] == ["body"] and len(loc) > 1 else loc) or "body"
        msg = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        parts.append(f"{where}: {msg}")
    if len(errors) > 5:
        parts.append(f"and {len(errors) - 5} more")
    return status, "; ".join(parts) or "invalid request"


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    type_ = getattr(exc, "type", None) or TYPES_BY_STATUS.get(exc.status_code, "error")
    message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    if exc.status_code == 404 and message == "Not Found":
        message = f"no such route: {request.url.path}"
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        message = f"{request.method} is not allowed on {request.url.path}"
        headers["Allow"] = ", ".join(_allowed_methods(request)) or headers.get("Allow", "")
    return error_response(exc.status_code, type_, message, headers)


def _allowed_methods(request: Request) -> list[str]:
    """Every method the API serves at this path, from its OpenAPI paths (Starlette names
    only the first matching route's, e.g. ``POST`` for ``/v1/jobs``, which also serves
    ``GET``)."""
    paths = request.app.openapi().get("paths", {})
    # A concrete path wins over templated ones (OpenAPI's rule): /v1/jobs/batch is not a
    # /v1/jobs/{job_id}.
    matches = [t for t in paths if t == request.url.path] or [
        t
        for t in paths
        if re.fullmatch(re.sub(r"\\{[^}]+\\}", "[^/]+", re.escape(t)), request.url.path)
    ]
    methods: set[str] = set()
    for template in matches:
        methods |= {m.upper() for m in paths[template]}
    if "GET" in methods:
        methods.add("HEAD")
    return sorted(methods)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    status, message = _describe(exc.errors())
    return error_response(status, "invalid_request", message)


async def _redis_error(request: Request, exc: Exception) -> JSONResponse:
    log.warning("redis unavailable on %s %s: %s", request.method, request.url.path, exc)
    return error_response(
        503, "unavailable", "the job store is unavailable; retry later", {"Retry-After": "1"}
    )


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal_error", "internal error")


def install(app: FastAPI) -> None:
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(redis.RedisError, _redis_error)
    app.add_exception_handler(Exception, _unexpected)


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI declarations of the given error statuses, all with the contract's error body."""
    descriptions = {
        400: "Malformed request (e.g. the body is not JSON)",
        401: "Missing or unknown API key, or a missing, expired, badly signed or revoked "
        "token (with `WWW-Authenticate: Bearer`)",
        403: "The credential lacks the scope this route needs (type `forbidden`)",
        404: "No such job for this tenant",
        409: "The job is not in a state that allows this",
        413: "Request body too large",
        422: "Invalid request: the message names the field and the problem",
        503: "Redis or the broker is unavailable",
    }
    return {s: {"model": ErrorBody, "description": descriptions[s]} for s in statuses}
