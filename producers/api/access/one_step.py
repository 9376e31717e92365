"""The caller of a hot route, checked in one dependency (``POST /v1/jobs``,
``GET /v1/jobs/{id}``).

:func:`producers.api.access.principal.require` takes four of FastAPI's dependency nodes per
request (the route's, the two security schemes it declares for /openapi.json, the router's
unknown-query check), and solving a node costs FastAPI tens of µs: a good part of a hot
route's CPU. :func:`caller` does the same checks in the same order (401, then 422 for an
unknown query parameter, then 403) in one node; the route declares its security itself with
:func:`security`, so /openapi.json is unchanged.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request

from producers.api.access.principal import Principal, holding, identify
from producers.api.access.scopes import SCOPES
from producers.api.limits import reject_unknown_query


def caller(scope: str) -> Any:
    """``Annotated[Principal, caller("jobs:write")]``: the caller, holding ``scope``."""
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}")

    async def checked_dependency(request: Request) -> Principal:
        return await checked(request, scope)

    return Depends(checked_dependency)


async def checked(request: Request, scope: str) -> Principal:
    """The caller of ``request``, holding ``scope``: 401, then 422 for an unknown query
    parameter, then 403."""
    await reject_unknown_query(request)  # identifies the caller first (401)
    return holding(request, await identify(request), [scope])


def security(scope: str) -> dict[str, Any]:
    """The route's ``openapi_extra``: the requirements :func:`require` would declare."""
    return {"security": [{"OAuth2": [scope]}, {"HTTPBearer": [scope]}]}


JobsWriteNow = Annotated[Principal, caller("jobs:write")]
JobsReadNow = Annotated[Principal, caller("jobs:read")]
