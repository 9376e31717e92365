"""The simulator's ASGI app: provider endpoints plus the ``/_sim/`` admin API.

Plain Starlette routes with no middleware, so a request costs little CPU and
one process holds a thousand slow requests at once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from simulator.admin import admin_routes
from simulator.anthropic_api import Messages
from simulator.errors import openai_error
from simulator.openai_api import ChatCompletions, Embeddings
from simulator.pipeline import Dialect, handle
from simulator.state import SimConfig, SimState

Endpoint = Callable[[Request], Awaitable[Response]]


def _endpoint(state: SimState, dialect: Dialect) -> Endpoint:
    async def endpoint(request: Request) -> Response:
        return await handle(state, dialect, request)

    return endpoint


async def _not_found(request: Request) -> Response:
    message = f"Unknown request URL: {request.method} {request.url.path} (simulator)."
    return openai_error(404, message, {}, error_type="invalid_request_error", code="unknown_url")


def create_app(config: SimConfig | None = None) -> Starlette:
    """A fresh simulator app; its state is at ``app.state.sim``."""
    state = SimState(config or SimConfig())
    routes = [
        Route("/v1/chat/completions", _endpoint(state, ChatCompletions()), methods=["POST"]),
        Route("/v1/embeddings", _endpoint(state, Embeddings()), methods=["POST"]),
        Route("/v1/messages", _endpoint(state, Messages()), methods=["POST"]),
        *admin_routes(state),
        Route("/v1/{path:path}", _not_found, methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
    ]
    app = Starlette(routes=routes)
    app.state.sim = state
    return app
