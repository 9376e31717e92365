"""The caller of a hot route (``POST /v1/jobs``, ``GET /v1/jobs/{id}``), checked in one call.

:func:`producers.api.access.principal.require` takes four of FastAPI's dependency nodes per
request (the route's, the two security schemes it declares for /openapi.json, the router's
unknown-query check), and solving a node costs FastAPI tens of µs: a good part of a hot
route's CPU. A hot route calls :func:`checked` instead (with the rest of its parameters read
by :mod:`producers.api.access.hot_params`): the same checks in the same order (401, then
422 for an unknown query parameter, then 403). The route declares its security itself with
:func:`security`, so /openapi.json is unchanged.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request

from producers.api.access.principal import Principal, holding, identify
from producers.api.access.scopes import SCOPES
from producers.api.limits import reject_unknown_query


async def checked(request: Request, scope: str) -> Principal:
    """The caller of ``request``, holding ``scope``: 401, then 422 for an unknown query
    parameter, then 403."""
    await reject_unknown_query(request)  # identifies the caller first (401)
    return holding(request, await identify(request), [scope])


def security(scope: str) -> dict[str, Any]:
    """The route's ``openapi_extra``: the requirements :func:`require` would declare."""
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}")
    return {"security": [{"OAuth2": [scope]}, {"HTTPBearer": [scope]}]}
