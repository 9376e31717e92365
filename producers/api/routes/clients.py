"""``/v1/clients``: a tenant's admins manage its OAuth2 clients (scope ``admin``).

The same as ``courier clients create|list|revoke``, limited to the admin's own tenant:
another tenant's client answers 404. A new client's secret is in the creation answer only.
"""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from producers.api import errors
from producers.api.access.clients import OAuthClients
from producers.api.access.principal import Admin
from producers.api.deps import ServicesDep
from producers.api.errors import ApiError
from producers.api.limits import reject_unknown_query

router = APIRouter(
    prefix="/v1/clients", tags=["access"], dependencies=[Depends(reject_unknown_query)]
)


class NewClient(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["user", "admin", "auditor"]
    name: str = Field(default="", max_length=100, description="What the client is for")


class Client(BaseModel):
    id: str
    tenant: str
    role: str
    name: str
    created: str
    revoked: str | None


class CreatedClient(Client):
    secret: str = Field(description="Shown in this answer only")


class ClientList(BaseModel):
    clients: list[Client]


@router.post(
    "",
    status_code=201,
    response_model=CreatedClient,
    summary="Create an OAuth2 client of the caller's tenant",
    responses=errors.responses(400, 401, 403, 413, 422, 503),
)
def create_client(body: NewClient, admin: Admin, services: ServicesDep) -> JSONResponse:
    try:
        info, secret = OAuthClients(services.redis).create(admin.tenant, body.role, body.name)
    except ValueError as exc:
        raise ApiError(422, str(exc)) from None
    return JSONResponse({**info.to_json(), "secret": secret}, status_code=201)


@router.get(
    "",
    response_model=ClientList,
    summary="List the tenant's OAuth2 clients (never their secrets)",
    responses=errors.responses(401, 403, 422, 503),
)
def list_clients(admin: Admin, services: ServicesDep) -> JSONResponse:
    infos = OAuthClients(services.redis).list(admin.tenant)
    return JSONResponse({"clients": [info.to_json() for info in infos]})


@router.delete(
    "/{client_id}",
    response_model=Client,
    summary="Revoke a client: its tokens fail within COURIER_TOKEN_REVOCATION_CHECK_S",
    responses=errors.responses(401, 403, 404, 422, 503),
)
def revoke_client(client_id: str, admin: Admin, services: ServicesDep) -> JSONResponse:
    clients = OAuthClients(services.redis)
    info = clients.get(client_id)
    if info is None or info.tenant != admin.tenant:
        raise ApiError(404, f"no client {client_id[:100]!r}")
    revoked = clients.revoke(client_id) or info
    return JSONResponse(revoked.to_json())
