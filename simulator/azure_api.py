"""Azure OpenAI's request shape around the OpenAI wire format.

``POST /openai/deployments/{deployment}/chat/completions?api-version=…`` (and
``/embeddings``): the deployment in the path names the model (whatever the body's ``model``
says), ``api-version`` is required, and the key comes in the ``api-key`` header (a bearer
token is accepted too, as Azure does for Entra ID tokens). Bodies, answers, errors and rate
headers are OpenAI's.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response

from simulator.errors import openai_error
from simulator.limits import Snapshot
from simulator.pipeline import Call, Dialect, bearer_token, handle
from simulator.state import SimState


class AzureDeployment:
    """One request's dialect: an OpenAI endpoint's, with Azure's key header and the
    deployment as the model."""

    provider = "azure"

    def __init__(self, inner: Dialect, deployment: str) -> None:
        self.inner = inner
        self.deployment = deployment

    def api_key(self, headers: Headers) -> str | None:
        return headers.get("api-key") or bearer_token(headers)

    def parse(self, body: Any) -> Call:
        if isinstance(body, dict):
            body = {**body, "model": self.deployment}
        call = self.inner.parse(body)
        call.model = self.deployment
        return call

    def error(
        self,
        status: int,
        message: str | None,
        headers: dict[str, str],
        *,
        param: str | None = None,
        error_type: str | None = None,
    ) -> Response:
        return self.inner.error(status, message, headers, param=param, error_type=error_type)

    def rate_headers(self, snapshot: Snapshot | None, wall_now: float) -> dict[str, str]:
        return self.inner.rate_headers(snapshot, wall_now)

    def respond(self, call: Call, request_id: str, headers: dict[str, str]) -> Response:
        return self.inner.respond(call, request_id, headers)


def azure_endpoint(state: SimState, inner: Dialect) -> Callable[[Request], Awaitable[Response]]:
    """The route handler of one Azure deployment endpoint (chat completions or embeddings)."""

    async def endpoint(request: Request) -> Response:
        if not request.query_params.get("api-version"):
            # Azure answers a request without api-version as an unknown resource.
            return openai_error(404, "Resource not found", {}, code="404")
        deployment = request.path_params["deployment"]
        return await handle(state, AzureDeployment(inner, deployment), request)

    return endpoint
