"""Limits on the request outside its body: header size (431) and unknown query parameters.

Headers too large are refused with 431 before any route runs.

uvicorn's default HTTP parser (httptools) sets no bound on header size, so the API sets
its own: the request line's target plus every header name and value, at most
``Settings.max_header_bytes`` (``COURIER_MAX_HEADER_BYTES``, 16 KiB). This bounds what a
route, the auth lookup or a log line ever sees; a proxy in front of the API (TLS
termination, SECURITY.md) should bound raw header size too, as nginx and others do.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from producers.api.access.principal import identify
from producers.api.errors import ApiError, error_response


def header_bytes(scope: Scope) -> int:
    size = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"")
    for name, value in scope.get("headers", ()):
        size += len(name) + len(value) + 4  # ": " and CRLF, as on the wire
    return size


class HeaderLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            size = header_bytes(scope)
            if size > self.max_bytes:
                response = error_response(
                    431,
                    "headers_too_large",
                    f"the request line and headers are {size} bytes; the limit is "
                    f"{self.max_bytes} bytes (COURIER_MAX_HEADER_BYTES)",
                )
                response.headers["Connection"] = "close"
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def query_names(dependant: Any) -> set[str]:
    """The query parameters a route takes, its dependencies' included."""
    names = {str(getattr(p, "alias", p.name)) for p in dependant.query_params}
    for sub in dependant.dependencies:
        names |= query_names(sub)
    return names


def documented_query_names(route: Any) -> set[str]:
    """The query parameters a route reads by hand and declares in ``openapi_extra``
    (producers/api/access/hot_params.py)."""
    extra = getattr(route, "openapi_extra", None) or {}
    return {p["name"] for p in extra.get("parameters", ()) if p.get("in") == "query"}


async def reject_unknown_query(request: Request) -> None:
    """A router dependency (after authentication: 401 comes first): 422 for a query
    parameter the route does not take (a typo such as ``?limt=5`` would otherwise be ignored
    in silence), naming the ones it takes."""
    await identify(request)
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None or not request.query_params:
        return
    known = query_names(dependant) | documented_query_names(route)
    unknown = sorted(set(request.query_params) - known)
    if unknown:
        takes = ", ".join(sorted(known)) or "none"
        raise ApiError(
            422, f"unknown query parameter {unknown[0][:100]!r}; this route takes: {takes}"
        )
