"""``GET /v1/audit``: the tenant's own audit entries, newest first (scope ``audit:read``)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from producers.api import errors
from producers.api.access.principal import AuditRead
from producers.api.deps import ServicesDep
from producers.api.errors import ApiError
from producers.api.limits import reject_unknown_query

router = APIRouter(
    prefix="/v1/audit", tags=["access"], dependencies=[Depends(reject_unknown_query)]
)

ACTION = r"^[a-z_]{1,32}(\.([a-z_]{1,32}|\*))?$"


class AuditEntry(BaseModel):
    request_id: str | None
    timestamp: str
    client_ip: str | None
    actor: str | None
    action: str
    status: int | None
    duration_ms: float | None
    job_id: str | None


class AuditEntries(BaseModel):
    entries: list[AuditEntry]


@router.get(
    "",
    response_model=AuditEntries,
    summary="Read the tenant's audit log, newest first",
    description="Actions: `job.submit`, `job.batch`, `job.cancel`, `job.redeliver`, "
    "`client.create`, `client.revoke`, `audit.read`, `auth.token`, `auth.denied`. Entries are "
    "kept 90 days (COURIER_AUDIT_RETENTION_S). Page back with `until` = the oldest "
    "timestamp received.",
    responses=errors.responses(401, 403, 422, 503),
)
async def read_audit(
    auditor: AuditRead,
    services: ServicesDep,
    since: Annotated[datetime | None, Query(description="Entries at or after (ISO 8601)")] = None,
    until: Annotated[datetime | None, Query(description="Entries at or before (ISO 8601)")] = None,
    action: Annotated[
        str | None,
        Query(pattern=ACTION, description="One action (`job.cancel`) or a family (`auth.*`)"),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> JSONResponse:
    for name, value in (("since", since), ("until", until)):
        if value is not None and value.tzinfo is None:
            raise ApiError(422, f"{name}: give a time zone (e.g. 2026-12-01T00:00:00Z)")
    entries = await services.audit.query(
        auditor.tenant,
        since.timestamp() if since else None,
        until.timestamp() if until else None,
        action,
        limit,
    )
    return JSONResponse({"entries": entries})
