"""Refuse requests whose headers are too large with 431, before any route runs.

uvicorn's default HTTP parser (httptools) sets no bound on header size, so the API sets
its own: the request line's target plus every header name and value, at most
``Settings.max_header_bytes`` (``COURIER_MAX_HEADER_BYTES``, 16 KiB). This bounds what a
route, the auth lookup or a log line ever sees; a proxy in front of the API (TLS
termination, SECURITY.md) should bound raw header size too, as nginx and others do.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from producers.api.errors import error_response


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
