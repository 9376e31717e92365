"""The audit trail: one JSON line per job action on logger ``courier.audit``.

Who (tenant, and ``key_id``: the first 12 hex digits of the API key's SHA-256, never the
key) did what (``job.submit``, ``job.cancel``, ``job.redeliver``) to which job, from where,
and how it ended (``http_status``; ``outcome`` ``ok`` or ``refused``). Refused attempts are
logged too: a 401 or a 404 has no tenant, only the key id. Prompts, outputs and keys are
never logged: the submit's job id is read from the start of the response, nothing else.

Written by :class:`producers.api.metrics.RequestMetricsMiddleware`, which sees every
response once; a cancel that ended a job is also counted in ``courier_jobs_finished``.
"""

from __future__ import annotations

import hashlib
import logging
import re
from typing import Any

from starlette.types import Scope

from core import keys
from core import metrics as wm

log = logging.getLogger("courier.audit")
log.setLevel(logging.INFO)  # the trail does not follow the access log's level

ACTIONS = {
    "/v1/jobs": "job.submit",
    "/v1/jobs/{job_id}/cancel": "job.cancel",
    "/v1/jobs/{job_id}/redeliver": "job.redeliver",
}
HEAD_BYTES = 256
JOB_ID = re.compile(rb'^\s*\{\s*"id"\s*:\s*"([A-Za-z0-9_\-]{1,64})"')


def key_id(scope: Scope) -> str | None:
    """A stable, non-reversible name for the presented API key."""
    for name, value in scope.get("headers") or ():
        if name == b"authorization":
            scheme, _, token = value.partition(b" ")
            if scheme.lower() == b"bearer" and token.strip():
                return hashlib.sha256(token.strip()).hexdigest()[:12]
    return None


class Audit:
    """One request's audit line, built while the response streams by."""

    def __init__(self, scope: Scope) -> None:
        self.head = b""
        self.key_id = key_id(scope)

    @classmethod
    def begin(cls, scope: Scope) -> Audit | None:
        if scope.get("method") != "POST" or not str(scope.get("path", "")).startswith("/v1/"):
            return None
        return cls(scope)

    def body(self, chunk: bytes) -> None:
        if len(self.head) < HEAD_BYTES:
            self.head += chunk[: HEAD_BYTES - len(self.head)]

    async def end(self, scope: Scope, route: str, status: int) -> None:
        action = ACTIONS.get(route)
        if action is None:
            return
        try:
            await self._write(scope, action, status)
        except Exception:  # the trail must never cost a request its answer
            log.exception("audit of %s failed", action)

    async def _write(self, scope: Scope, action: str, status: int) -> None:
        job_id = (scope.get("path_params") or {}).get("job_id")
        if job_id is None and 200 <= status < 300:
            found = JOB_ID.match(self.head)
            job_id = found.group(1).decode() if found else None
        fields: dict[str, Any] = {
            "event": action,
            "tenant": None,
            "job_id": job_id,
            "http_status": status,
            "outcome": "ok" if 200 <= status < 300 else "refused",
            "key_id": self.key_id,
            "client": (scope.get("client") or (None,))[0],
        }
        services = getattr(getattr(scope.get("app"), "state", None), "services", None)
        # The requester owns the job only when the action was allowed (2xx) or came too
        # late (409); a 404 may name another tenant's job, whose owner is not the requester.
        if job_id and services is not None and (200 <= status < 300 or status == 409):
            try:
                tenant, model, priority = await services.aredis.hmget(
                    keys.job(job_id), ["tenant", "model", "priority"]
                )
            except Exception as exc:
                log.warning("audit: job %s not readable: %s", job_id, exc)
            else:
                fields.update(tenant=tenant, model=model, priority=priority)
                if action == "job.cancel" and status == 200:
                    await services.aredis.hincrby(
                        keys.metrics(wm.FINISHED),
                        wm.field("cancelled", model or "unknown", priority or "unknown"),
                        1,
                    )
        if action == "job.submit" and status == 200:
            fields["replay"] = True  # an Idempotency-Key replay: nothing new was queued
        log.info(action, extra=fields)
