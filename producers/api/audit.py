"""The audit trail: who did what, from where, and how it ended (docs/contract.md, Access control).

Audited actions: ``job.submit``, ``job.batch``, ``job.cancel``, ``job.redeliver``,
``client.create``, ``client.revoke``, ``audit.read``, ``auth.token`` (a token issued) and
``auth.denied`` (a token refused at ``POST /oauth/token``, or a request refused with 401 or
403 by :mod:`producers.api.access.principal`). Each is written twice:

- one JSON line on logger ``courier.audit``: ``event`` (the action), ``tenant`` (the job's
  owner, read from the job record when the action was allowed; without a job, the
  caller's tenant), ``job_id``,
  ``http_status``, ``outcome`` (``ok`` or ``refused``), ``key_id`` (the first 12 hex digits
  of the credential's SHA-256, never the credential), ``actor``, ``client``,
  ``request_id``, ``duration_ms``, and ``reason`` for a denial — every action, even one
  that names no tenant (an unknown key, a badly signed token);
- an entry of the caller's tenant's audit log in Redis (:mod:`producers.api.auditlog`),
  read with ``GET /v1/audit``, whenever the caller's tenant is known (from the API key, the
  token, or the client named at ``/oauth/token``).

Prompts, outputs, keys and secrets are never written: the submit's job id is read from the
start of the response, nothing else. Written by
:class:`producers.api.metrics.RequestMetricsMiddleware`, which sees every response once.
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
    ("POST", "/v1/jobs"): "job.submit",
    ("POST", "/v1/jobs/batch"): "job.batch",
    ("POST", "/v1/jobs/{job_id}/cancel"): "job.cancel",
    ("POST", "/v1/jobs/{job_id}/redeliver"): "job.redeliver",
    ("POST", "/v1/clients"): "client.create",
    ("DELETE", "/v1/clients/{client_id}"): "client.revoke",
    ("GET", "/v1/audit"): "audit.read",
}
TOKEN_ROUTE = "/oauth/token"
HEAD_BYTES = 256
JOB_ID = re.compile(rb'^\s*\{\s*"id"\s*:\s*"([A-Za-z0-9_\-]{1,64})"')


def key_id(scope: Scope) -> str | None:
    """A stable, non-reversible name for the presented credential."""
    for name, value in scope.get("headers") or ():
        if name == b"authorization":
            scheme, _, token = value.partition(b" ")
            if scheme.lower() == b"bearer" and token.strip():
                return hashlib.sha256(token.strip()).hexdigest()[:12]
    return None


def action_of(method: str, route: str, status: int, denied: bool) -> str | None:
    if route == TOKEN_ROUTE:
        return "auth.token" if status == 200 else "auth.denied"
    if denied and status in (401, 403):
        return "auth.denied"
    return ACTIONS.get((method, route))


class Audit:
    """One request's audit entry, built while the response streams by."""

    def __init__(self, scope: Scope) -> None:
        self.head = b""
        self.state: dict[str, Any] = scope.setdefault("state", {})

    @classmethod
    def begin(cls, scope: Scope) -> Audit | None:
        path = str(scope.get("path", ""))
        if not (path.startswith("/v1/") or path == TOKEN_ROUTE):
            return None
        return cls(scope)

    def body(self, chunk: bytes) -> None:
        if len(self.head) < HEAD_BYTES:
            self.head += chunk[: HEAD_BYTES - len(self.head)]

    async def end(
        self, scope: Scope, route: str, status: int, request_id: str, duration_ms: float
    ) -> None:
        denial = self.state.get("denial")
        action = action_of(str(scope.get("method")), route, status, denial is not None)
        if action is None:
            return
        try:
            await self._write(scope, action, status, request_id, duration_ms)
        except Exception:  # the trail must never cost a request its answer
            log.exception("audit of %s failed", action)

    async def _write(
        self, scope: Scope, action: str, status: int, request_id: str, duration_ms: float
    ) -> None:
        principal, denial = self.state.get("principal"), self.state.get("denial")
        job_id = (scope.get("path_params") or {}).get("job_id")
        if job_id is None and action == "job.submit" and 200 <= status < 300:
            found = JOB_ID.match(self.head)
            job_id = found.group(1).decode() if found else None
        client_ip = (scope.get("client") or (None,))[0]
        actor = getattr(denial, "actor", None) or getattr(principal, "actor", None)
        fields: dict[str, Any] = {
            "event": action,
            "tenant": None,
            "job_id": job_id,
            "http_status": status,
            "outcome": "ok" if 200 <= status < 300 else "refused",
            "key_id": key_id(scope),
            "actor": actor,
            "client": client_ip,
            "request_id": request_id,
            "duration_ms": duration_ms,
        }
        if denial is not None:
            fields["reason"] = denial.reason
        services = getattr(getattr(scope.get("app"), "state", None), "services", None)
        tenant = getattr(denial, "tenant", None) or getattr(principal, "tenant", None)
        if services is not None and tenant:
            # Queued before any await below: the tenant's log keeps the order in which the
            # answers went out (the caller's next request may already be running).
            entry = {
                "request_id": request_id,
                "client_ip": client_ip,
                "actor": actor,
                "action": action,
                "status": status,
                "duration_ms": duration_ms,
                "job_id": job_id,
            }
            services.audit.append_soon(tenant, entry)
        # The requester owns the job only when the action was allowed (2xx) or came too
        # late (409); a 404 may name another tenant's job, whose owner is not the requester.
        known = self.state.get("audit_job")  # the submit route's own job: nothing to read
        if known is not None and known[0] == job_id:
            fields.update(tenant=known[1], model=known[2], priority=known[3])
        elif job_id and services is not None and (200 <= status < 300 or status == 409):
            await self._job_fields(services, action, status, job_id, fields)
        if action == "job.submit" and status == 200:
            fields["replay"] = True  # an Idempotency-Key replay: nothing new was queued
        if not job_id:
            fields["tenant"] = tenant  # no job to own the action: the caller's tenant
        log.info(action, extra=fields)
        if services is not None and action.startswith("auth."):
            services.metrics.auth_events.labels(action, str(status)).inc()

    @staticmethod
    async def _job_fields(
        services: Any, action: str, status: int, job_id: str, fields: dict[str, Any]
    ) -> None:
        try:
            tenant, model, priority = await services.aredis.hmget(
                keys.job(job_id), ["tenant", "model", "priority"]
            )
        except Exception as exc:
            log.warning("audit: job %s not readable: %s", job_id, exc)
            return
        fields.update(tenant=tenant, model=model, priority=priority)
        if action == "job.cancel" and status == 200:
            await services.aredis.hincrby(
                keys.metrics(wm.FINISHED),
                wm.field("cancelled", model or "unknown", priority or "unknown"),
                1,
            )
