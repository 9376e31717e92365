"""Error bodies in each provider's shape, and the JSON response helper.

OpenAI:    ``{"error": {"message", "type", "param", "code"}}``
Anthropic: ``{"type": "error", "error": {"type", "message"}, "request_id"}``
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from starlette.responses import Response


class BadRequest(Exception):
    """The request body is malformed; answered as a 400 in the provider's shape."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def json_response(
    obj: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    return Response(dumps(obj), status, dict(headers or {}), "application/json")


DEFAULT_MESSAGES = {
    400: "Invalid request (simulated).",
    401: "Incorrect API key provided (simulated).",
    403: "You are not allowed to use this resource (simulated).",
    404: "The model does not exist or you do not have access to it (simulated).",
    408: "Request timed out (simulated).",
    409: "Conflict (simulated).",
    413: "Request too large (simulated).",
    422: "Unprocessable request (simulated).",
    429: "Rate limit reached (simulated).",
    500: "The server had an error while processing your request (simulated).",
    502: "Bad gateway (simulated).",
    503: "The server is overloaded or not ready yet (simulated).",
    504: "Gateway timeout (simulated).",
    529: "Overloaded (simulated).",
}

# status -> (type, code)
_OPENAI_TYPES: dict[int, tuple[str, str | None]] = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "permission_denied"),
    404: ("invalid_request_error", "model_not_found"),
    413: ("invalid_request_error", "request_too_large"),
    429: ("requests", "rate_limit_exceeded"),
    500: ("server_error", None),
    503: ("server_error", "service_unavailable"),
    529: ("server_error", "overloaded"),
}

_ANTHROPIC_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def default_message(status: int) -> str:
    return DEFAULT_MESSAGES.get(status, f"Simulated error {status}.")


def openai_error(
    status: int,
    message: str | None,
    headers: Mapping[str, str],
    *,
    param: str | None = None,
    error_type: str | None = None,
    code: str | None = None,
) -> Response:
    default_type, default_code = _OPENAI_TYPES.get(
        status, ("server_error" if status >= 500 else "invalid_request_error", None)
    )
    body = {
        "error": {
            "message": message or default_message(status),
            "type": error_type or default_type,
            "param": param,
            "code": code or default_code,
        }
    }
    return json_response(body, status, headers)


def anthropic_error(
    status: int, message: str | None, headers: Mapping[str, str], request_id: str = ""
) -> Response:
    error_type = _ANTHROPIC_TYPES.get(
        status, "api_error" if status >= 500 else "invalid_request_error"
    )
    body = {
        "type": "error",
        "error": {"type": error_type, "message": message or default_message(status)},
        "request_id": request_id or None,
    }
    return json_response(body, status, headers)
