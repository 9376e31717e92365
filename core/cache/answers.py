"""Answers kept for jobs that ask for them (``"cache": {"ttl_s": N}``), per tenant.

**Key.** SHA-256 of the canonical JSON of ``[tenant, model, kind, request]`` (keys sorted, no
spaces; the request as the API normalised it), computed by the API at submission and kept in
the job record (``cache_key``), so the worker stores the answer under the very key the API
looks up. The tenant is in the key and in the Redis key's name: a tenant never sees
another's answer.

**Hit.** At submission, one Lua script (:data:`scripts.CREATE_CACHED`) looks the key up and,
when an answer stored at most ``ttl_s`` seconds ago is there, creates the job already
``succeeded`` with that answer (``result.cached: true``, ``cost_usd: 0``, no queueing, no
provider call); otherwise it stores nothing and the API creates the job as usual. One round
trip either way; hits and misses are counted in ``courier:metrics:cache``.

**Store.** When a job that asked for the cache succeeds, the worker stores its answer with
the job's ending (one round trip), for the job's own ``ttl_s``; a later job is served that
answer if it is younger than *its* ``ttl_s``. Only successful answers are kept.

**Memory** is bounded three ways: an answer larger than ``COURIER_CACHE_MAX_ENTRY_BYTES``
(default 256 KiB) is not kept; an entry lives at most its ``ttl_s`` (≤ 30 days); and a
tenant's entries take at most ``COURIER_CACHE_MAX_TENANT_BYTES`` (default 64 MiB; past it its
soonest-expiring entries are evicted), so the cache holds at most that cap times the tenants.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import redis

from core import keys, metrics
from core.cache import scripts
from core.jobs import MAX_CACHE_TTL_S, CallbackState
from core.pipelined import ScriptCall
from core.records import Record, encode_fields, new_job_id, now_ms

CALLBACK_SAFETY_S = 30.0  # as JobStore.finish: the schedule sends the webhook if we die first
INDEX_TTL_S = MAX_CACHE_TTL_S + 24 * 3600


def cache_digest(tenant: str, model: str, kind: str, request: Mapping[str, Any]) -> str:
    """The cache key of a submission (hex SHA-256 of its canonical JSON)."""
    canonical = json.dumps(
        [tenant, model, kind, request], sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(slots=True)
class Lookup:
    """What a cached submission found: the new job (a hit), the job an Idempotency-Key made
    before (a replay), or neither (a miss)."""

    record: Record | None = None
    replay_id: str | None = None


class AnswerCache:
    def __init__(self, client: redis.Redis, max_entry_bytes: int, max_tenant_bytes: int) -> None:
        self.redis = client
        self.max_entry_bytes = max_entry_bytes
        self.max_tenant_bytes = max_tenant_bytes
        self._create = client.register_script(scripts.CREATE_CACHED)
        self._put = client.register_script(scripts.CACHE_PUT)

    def create_from_cache(
        self,
        tenant: str,
        fields: Mapping[str, Any],
        max_age_s: float,
        idempotency_key: str | None,
        retention_s: int,
    ) -> Lookup:
        """Create the job ``fields`` describe already succeeded, if its answer is cached."""
        job_id = new_job_id()
        now = now_ms()
        callback = CallbackState(url=fields.get("callback_url"))
        due: int | str = ""
        if callback.url:
            callback.status = "pending"
            due = now + int(CALLBACK_SAFETY_S * 1000)
        model, priority = str(fields["model"]), str(fields.get("priority", "normal"))
        record = {**fields, "id": job_id, "tenant": tenant, "callback": callback.model_dump()}
        answer = self._create(
            keys=[
                keys.cache_entry(tenant, str(fields["cache_key"])),
                keys.job(job_id),
                keys.tenant_jobs(tenant),
                keys.idempotency(tenant, idempotency_key or ""),
                keys.CALLBACKS_SCHEDULED,
                keys.metrics(metrics.SUBMITTED),
                keys.metrics(metrics.FINISHED),
                keys.metrics(metrics.CACHE),
            ],
            args=[
                job_id,
                retention_s,
                now,
                "1" if idempotency_key else "0",
                int(max_age_s * 1000),
                due,
                keys.JOB_PREFIX,
                metrics.field(model, priority, fields.get("kind", "chat")),
                metrics.field("succeeded", model, priority),
                metrics.field(model),
                *encode_fields(record),
            ],
        )
        if not answer:
            return Lookup()
        if answer[0] == "replay":
            return Lookup(replay_id=str(answer[1]))
        flat = answer[1:]
        return Lookup(record=dict(zip(flat[::2], flat[1::2], strict=True)))

    def put(self, tenant: str, digest: str, ttl_s: int, result: Mapping[str, Any]) -> bool:
        """Keep ``result`` (a job's ``result`` object) for ``ttl_s``; False when it is larger
        than the entry cap (not kept)."""
        call = self.put_call(tenant, digest, ttl_s, result)
        if call is None:
            return False
        call.run()
        return True

    def put_call(
        self, tenant: str, digest: str, ttl_s: int, result: Mapping[str, Any]
    ) -> ScriptCall | None:
        """:meth:`put` as a script call, to send with the job's ending; None when the answer
        is too large to keep."""
        body = json.dumps({**result, "cached": True}, separators=(",", ":"))
        value = f"{int(time.time() * 1000)}|{body}"
        if len(value.encode()) > self.max_entry_bytes:
            return None
        return ScriptCall(
            self._put,
            [keys.cache_entry(tenant, digest), keys.cache_index(tenant), keys.cache_sizes(tenant)],
            [
                value,
                max(1, int(ttl_s)),
                now_ms(),
                self.max_tenant_bytes,
                digest,
                keys.cache_entry(tenant, ""),
                INDEX_TTL_S,
            ],
        )
