"""The job store: job records in Redis, the single source of truth (docs/contract.md, The job).

Every status change goes through one of the Lua scripts in :mod:`core.scripts`,
so it is atomic and one-way. The Celery message carries only the job id.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import redis

from config.settings import Settings
from core import keys, scripts
from core.claims import Claim, claim_from
from core.errors import QuotaExceeded
from core.jobs import TERMINAL, CallbackState
from core.pipelined import ScriptCall, run_together
from core.records import Record, encode_fields, new_job_id, now_ms
from core.replication import Replication

CALLBACK_SAFETY_S = 30.0
_NO_CALLBACK = CallbackState().model_dump()  # a new job's callback state, but for its url


class JobStore:
    """Reads and changes job records. Takes a redis-py client with ``decode_responses=True``."""

    def __init__(
        self,
        client: redis.Redis,
        retention_s: int = 7 * 24 * 3600,
        replication: Replication | None = None,
    ) -> None:
        self.redis = client
        self.retention_s = retention_s
        # What acknowledges a write only once replicas hold it (off unless configured).
        self.replication = replication or Replication(client)
        self._create = client.register_script(scripts.CREATE)
        self._claim = client.register_script(scripts.CLAIM)
        self._begin_attempt = client.register_script(scripts.BEGIN_ATTEMPT)
        self._finish = client.register_script(scripts.FINISH)
        self._requeue = client.register_script(scripts.REQUEUE)
        self._renew = client.register_script(scripts.RENEW)
        self._recover = client.register_script(scripts.RECOVER)
        self._due = client.register_script(scripts.DUE)
        self._age = client.register_script(scripts.AGE)

    @classmethod
    def from_settings(cls, client: redis.Redis, settings: Settings) -> JobStore:
        replication = Replication(
            client, settings.replicas_to_confirm, settings.redis_replica_timeout_s
        )
        return cls(client, settings.job_retention_s, replication)

    # ---- producers ----------------------------------------------------------

    def create(
        self,
        tenant: str,
        fields: Mapping[str, Any],
        idempotency_key: str | None = None,
        max_unfinished: int | None = None,
    ) -> tuple[str, bool]:
        """Store a new queued job. Returns (job id, created); an Idempotency-Key the tenant
        used before returns the first job's id and created=False. Raises
        :class:`QuotaExceeded` (storing nothing) when the tenant already has
        ``max_unfinished`` jobs that have not ended; a replay is never refused."""
        job_id, script_keys, args = self.create_call(
            tenant, fields, idempotency_key, max_unfinished
        )
        return self._created(job_id, self._create(keys=script_keys, args=args), max_unfinished)

    def create_many(
        self,
        tenant: str,
        items: Sequence[tuple[Mapping[str, Any], str | None]],
        max_unfinished: int | None = None,
    ) -> list[tuple[str, bool]]:
        """:meth:`create` for each ``(fields, idempotency key)``, in one round trip, all or
        nothing: when the quota refuses one, the jobs this call created are deleted and
        :class:`QuotaExceeded` is raised."""
        pipe = self.redis.pipeline(transaction=False)
        ids = []
        for fields, idempotency_key in items:
            job_id, script_keys, args = self.create_call(
                tenant, fields, idempotency_key, max_unfinished
            )
            self._create(keys=script_keys, args=args, client=pipe)
            ids.append(job_id)
        outcomes, refused = [], None
        for job_id, answer in zip(ids, pipe.execute(), strict=True):
            try:
                outcomes.append(self._created(job_id, answer, max_unfinished))
            except QuotaExceeded as exc:
                refused = refused or exc
        if refused is not None:
            undone = [
                (job_id, key)
                for (job_id, created), (_, key) in zip(outcomes, items, strict=False)
                if created
            ]
            self.delete_many([(job_id, tenant) for job_id, _ in undone])
            for _, key in undone:
                if key:
                    self.forget_idempotency(tenant, key)
            raise refused
        return outcomes

    def create_call(
        self,
        tenant: str,
        fields: Mapping[str, Any],
        idempotency_key: str | None,
        max_unfinished: int | None,
    ) -> tuple[str, list[str], list[Any]]:
        """A new job id and the CREATE script's keys and arguments for it."""
        job_id = new_job_id()
        created = now_ms()
        expires_at = fields.get("expires_at")
        callback = {**_NO_CALLBACK, "url": fields.get("callback_url"), "log": []}
        record = {
            **fields,
            "id": job_id,
            "tenant": tenant,
            "status": "queued",
            "created_at": created / 1000,
            "attempts": 0,
            "callback": callback,
        }
        script_keys = [
            keys.job(job_id),
            keys.tenant_jobs(tenant),
            keys.idempotency(tenant, idempotency_key or ""),
            keys.EXPIRIES,
            keys.queued(str(fields.get("priority", "normal"))),
            keys.tenant_unfinished(tenant),
        ]
        args = [
            job_id,
            self.retention_s,
            created,
            "1" if idempotency_key else "0",
            int(float(expires_at) * 1000) if expires_at else "",
            keys.JOB_PREFIX,
            "" if max_unfinished is None else max_unfinished,
            *encode_fields(record),
        ]
        return job_id, script_keys, args

    @staticmethod
    def _created(job_id: str, answer: Any, max_unfinished: int | None) -> tuple[str, bool]:
        if isinstance(answer, list):
            raise QuotaExceeded(int(answer[1]), int(max_unfinished or 0))
        return (answer, False) if answer else (job_id, True)

    def delete(self, job_id: str, tenant: str) -> None:
        """Undo a create whose enqueue failed, so nothing is left half-accepted."""
        self.delete_many([(job_id, tenant)])

    def delete_many(self, jobs: Iterable[tuple[str, str]]) -> None:
        """:meth:`delete` for each ``(job id, tenant)``, in one round trip."""
        pipe = self.redis.pipeline(transaction=False)
        for job_id, tenant in jobs:
            pipe.delete(keys.job(job_id), keys.job_events(job_id))
            for index in (keys.tenant_jobs(tenant), keys.EXPIRIES, keys.tenant_unfinished(tenant),
                          *keys.QUEUED_ALL):  # fmt: skip
                pipe.zrem(index, job_id)
        pipe.execute()

    def forget_idempotency(self, tenant: str, idempotency_key: str) -> None:
        self.redis.delete(keys.idempotency(tenant, idempotency_key))

    def get(self, job_id: str) -> Record | None:
        record: Record = self.redis.hgetall(keys.job(job_id))  # type: ignore[assignment]
        return record or None

    def get_many(self, job_ids: Iterable[str]) -> list[Record]:
        pipe = self.redis.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hgetall(keys.job(job_id))
        return [r for r in pipe.execute() if r]

    def list_ids(self, tenant: str, start: int, count: int) -> list[str]:
        """Job ids of a tenant, newest first."""
        ids: list[str] = self.redis.zrevrange(  # type: ignore[assignment]
            keys.tenant_jobs(tenant), start, start + count - 1
        )
        return ids

    def list_jobs(
        self, tenant: str, status: str | None, limit: int, scan_max: int = 5000
    ) -> list[Record]:
        """The tenant's newest jobs, optionally only those with ``status``."""
        found: list[Record] = []
        start, page = 0, max(limit, 100)
        while len(found) < limit and start < scan_max:
            ids = self.list_ids(tenant, start, page)
            if not ids:
                break
            for record in self.get_many(ids):
                if status is None or record.get("status") == status:
                    found.append(record)
            start += page
        return found[:limit]

    # ---- workers ------------------------------------------------------------

    def claim(self, job_id: str, token: str, lease_ttl_s: float) -> Claim:
        """Start running a queued job under a lease; anything else says why not. The record
        returned counts the run's first provider call in ``attempts`` already."""
        now = now_ms()
        out: list[str] = self._claim(
            keys=[keys.job(job_id), keys.RUNNING, keys.SCHEDULED, *keys.QUEUED_ALL],
            args=[job_id, token, now, now + int(lease_ttl_s * 1000), keys.starts(now // 1000)],
        )
        return claim_from(out)

    def begin_attempt(self, job_id: str, token: str, model: str = "") -> int:
        """Count a provider call (to ``model``) about to be made: the attempt number, -1 if
        the lease is lost (cancelled or taken over), -2 if the job has expired."""
        return int(self._begin_attempt(keys=[keys.job(job_id)], args=[token, now_ms(), model]))

    def finish(
        self,
        job_id: str,
        status: str,
        *,
        token: str = "",
        allowed: Iterable[str] = ("running",),
        fields: Mapping[str, Any] | None = None,
        record: Record | None = None,
        before: Sequence[ScriptCall] = (),
        released: list[tuple[str, str]] | None = None,
    ) -> tuple[bool, str, bool]:
        """End a job once: (ended by this call, previous status, a callback is now due).
        ``before``: scripts to run first in the same round trip (the last call's cost, the
        answer for the cache), whether or not the job ends. ``released`` gets the (id,
        priority) of the child jobs its success released (core.conversations): they wait
        for a message, the caller's to send at once."""
        assert status in TERMINAL
        record = record if record is not None else (self.get(job_id) or {})
        extra: dict[str, Any] = {"finished_at": time.time(), **(fields or {})}
        callback_due: int | str = ""
        if record.get("callback_url"):
            callback = json.loads(record.get("callback") or "{}")
            callback.update(status="pending", url=record["callback_url"])
            extra["callback"] = callback
            # Sent at once by whoever ended the job; the schedule is the safety net should
            # that process die before sending.
            callback_due = now_ms() + int(CALLBACK_SAFETY_S * 1000)
        ending = ScriptCall(
            self._finish,
            [
                keys.job(job_id),
                keys.RUNNING,
                keys.SCHEDULED,
                keys.EXPIRIES,
                keys.CALLBACKS_SCHEDULED,
                *keys.QUEUED_ALL,
                keys.tenant_unfinished(record.get("tenant", "")),
            ],
            [
                job_id,
                token,
                "," + ",".join(allowed) + ",",
                status,
                self.retention_s,
                keys.JOB_EVENTS,
                callback_due,
                *encode_fields(extra),
            ],
        )
        done, previous, *children = run_together(self.redis, [*before, ending])[-1]
        if released is not None:
            released.extend(zip(children[::2], children[1::2], strict=True))
        return bool(done), str(previous), bool(done) and callback_due != ""

    def requeue(
        self,
        job_id: str,
        token: str,
        delay_s: float,
        waiting_for: str,
        fields: Mapping[str, Any] | None = None,
    ) -> bool:
        """Hand a running job back to be run again after ``delay_s`` (a retry, a wait)."""
        return bool(
            self._requeue(
                keys=[keys.job(job_id), keys.RUNNING, keys.SCHEDULED],
                args=[
                    job_id,
                    token,
                    now_ms() + int(delay_s * 1000),
                    waiting_for,
                    *encode_fields(fields or {}),
                ],
            )
        )

    def renew(self, leases: Mapping[str, str], lease_ttl_s: float) -> list[str]:
        """Extend the leases a worker holds ({job id: token}); returns the ids it lost."""
        if not leases:
            return []
        job_ids = list(leases)
        args: list[Any] = [now_ms() + int(lease_ttl_s * 1000)]
        for job_id in job_ids:
            args += [job_id, leases[job_id]]
        lost: list[str] = self._renew(
            keys=[keys.RUNNING, *(keys.job(j) for j in job_ids)], args=args
        )
        return lost

    def statuses(self, job_ids: list[str]) -> dict[str, str]:
        """Each job's status now ('' for a job that is gone)."""
        if not job_ids:
            return {}
        pipe = self.redis.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hget(keys.job(job_id), "status")
        found = pipe.execute()
        return {
            j: (s.decode() if isinstance(s, bytes) else s or "")
            for j, s in zip(job_ids, found, strict=True)
        }

    def set_fields(self, job_id: str, fields: Mapping[str, Any]) -> None:
        """Fields outside the status machine (callback state, waiting_for)."""
        flat = encode_fields(fields)
        self.redis.hset(keys.job(job_id), mapping=dict(zip(flat[::2], flat[1::2], strict=True)))

    # ---- sweeper ------------------------------------------------------------

    def recover_lapsed(self, limit: int = 500) -> list[str]:
        """Running jobs whose lease lapsed (their worker died or was cut off) go back to
        the queue; returns their ids (they are also scheduled, due now)."""
        ids: list[str] = self._recover(
            keys=[keys.RUNNING, keys.SCHEDULED], args=[now_ms(), limit, keys.JOB_PREFIX]
        )
        return ids

    def due(self, limit: int = 1000, redo_s: float = 300) -> list[tuple[str, str]]:
        """Scheduled jobs due now, as (id, priority). Each stays scheduled ``redo_s`` later
        until claimed, so a crash between this call and the enqueue loses nothing."""
        flat: list[str] = self._due(
            keys=[keys.SCHEDULED],
            args=[now_ms(), limit, int(redo_s * 1000), keys.JOB_PREFIX, keys.queued("")],
        )
        return list(zip(flat[::2], flat[1::2], strict=True))

    def orphans(self, priority: str, older_than_s: float, limit: int = 100) -> list[str]:
        """Jobs waiting in ``priority``'s queue index for longer than ``older_than_s`` while
        that broker queue holds no message at all, and no tenant list of the fair order
        (:mod:`core.fair`) either: their message was lost. Their age is reset, so each is
        reported once per ``older_than_s``."""
        lists = keys.broker_lists([f"jobs.{priority}"])
        pipe = self.redis.pipeline(transaction=False)
        for name in lists:
            pipe.llen(name)
        pipe.hget(keys.fair_state(priority), "held")
        pipe.zcard(keys.fair_tenants(priority))
        if any(int(n or 0) > 0 for n in pipe.execute()):
            return []
        now = now_ms()
        candidates: list[str] = self.redis.zrangebyscore(  # type: ignore[assignment]
            keys.queued(priority), "-inf", now - int(older_than_s * 1000), start=0, num=limit
        )
        found = [r["id"] for r in self.get_many(candidates) if r.get("status") == "queued"]
        if found:
            self.redis.zadd(keys.queued(priority), {job_id: now for job_id in found})
        return found

    def reschedule_now(self, job_ids: list[str]) -> None:
        """Make scheduled jobs due again now (their enqueue failed)."""
        if job_ids:
            now = now_ms()
            self.redis.zadd(keys.SCHEDULED, {job_id: now for job_id in job_ids})

    def expired_queued(self, limit: int = 500) -> list[str]:
        """Ids of jobs whose ``expires_at`` has passed (still to be marked expired)."""
        ids: list[str] = self.redis.zrangebyscore(  # type: ignore[assignment]
            keys.EXPIRIES, "-inf", now_ms(), start=0, num=limit
        )
        return ids

    # ---- priority aging -----------------------------------------------------

    def age(self, source: str, target: str, older_than_s: float, limit: int = 500) -> list[str]:
        """Move jobs that waited in ``source`` longer than ``older_than_s`` up to ``target``;
        returns their ids (the caller enqueues them on the target queue)."""
        ids: list[str] = self._age(
            keys=[keys.queued(source), keys.queued(target)],
            args=[now_ms(), int(older_than_s * 1000), limit, keys.JOB_PREFIX],
        )
        return ids
