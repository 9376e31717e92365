"""The simulator's ASGI app: provider endpoints plus the ``/_sim/`` admin API.

OpenAI's and Anthropic's endpoints at their own paths and under any prefix (for named
providers' base URLs), and Azure OpenAI's deployment paths.

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
from simulator.azure_api import azure_endpoint
from simulator.errors import openai_error
from simulator.openai_api import ChatCompletions, Embeddings
from simulator.pipeline import Dialect, handle
from simulator.state import SimConfig, SimState

Endpoint = Callable[[Request], Awaitable[Response]]
AZURE = "/openai/deployments/{deployment}"


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
    chat, embeddings, messages = ChatCompletions(), Embeddings(), Messages()
    routes = [
        Route("/v1/chat/completions", _endpoint(state, chat), methods=["POST"]),
        Route("/v1/embeddings", _endpoint(state, embeddings), methods=["POST"]),
        Route("/v1/messages", _endpoint(state, messages), methods=["POST"]),
        *admin_routes(state),
        # Azure OpenAI: the deployment in the path, ?api-version=…, the api-key header.
        Route(f"{AZURE}/chat/completions", azure_endpoint(state, chat), methods=["POST"]),
        Route(f"{AZURE}/embeddings", azure_endpoint(state, embeddings), methods=["POST"]),
        # Any other base URL (``/v1beta/openai/`` as Gemini's, ``/ollama/v1``, …): the same
        # endpoints under a prefix, so a named provider's base_url shows in the log's path.
        Route("/{prefix:path}/chat/completions", _endpoint(state, chat), methods=["POST"]),
        Route("/{prefix:path}/embeddings", _endpoint(state, embeddings), methods=["POST"]),
        Route("/{prefix:path}/v1/messages", _endpoint(state, messages), methods=["POST"]),
        Route("/v1/{path:path}", _not_found, methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
    ]
    app = Starlette(routes=routes)
    app.state.sim = state
    return app
