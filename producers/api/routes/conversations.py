"""``GET /v1/jobs/{id}/conversation``: the job's transcript, root first, each message with the
job that added it (docs/contract.md, Conversations). The line of ancestors is read in one
script whatever its depth (core.conversations.chain)."""

from __future__ import annotations

from typing import Any

import anyio.to_thread
from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from core import conversations
from core.jobs import Conversation
from producers.api import errors
from producers.api.access.principal import JobsRead
from producers.api.deps import ServicesDep
from producers.api.errors import ApiError
from producers.api.limits import reject_unknown_query

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], dependencies=[Depends(reject_unknown_query)])


@router.get(
    "/{job_id}/conversation",
    response_model=Conversation,
    summary="Read the conversation a job belongs to, up to and including its reply",
    responses=errors.responses(401, 403, 404, 422, 503),
)
async def get_conversation(job_id: str, caller: JobsRead, services: ServicesDep) -> JSONResponse:
    settings = services.settings
    links = await anyio.to_thread.run_sync(
        conversations.chain, services.store.redis, job_id, settings.conversation_max_messages + 2
    )
    job = links[0] if links else None
    if job is None or not job.kept or job.tenant != caller.tenant:
        raise ApiError(404, f"no job {job_id!r}")
    if job.kind != "chat":
        raise ApiError(422, f"job {job_id} is an embedding job: it has no conversation")
    # every ancestor is the tenant's (checked at submission); a line cut short is said, not hidden
    kept = [link for link in links if link.kept and link.tenant == caller.tenant]
    root = kept[-1].job_id
    body: dict[str, Any] = {"conversation_id": root, "messages": conversations.transcript(kept)}
    if len(kept) < len(links):
        body["incomplete"] = True
    return JSONResponse(body)
