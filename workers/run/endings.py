"""How a run leaves its job: ended (succeeded, failed, expired) or handed back to run later,
each written to the store patiently while Redis is unreachable or failing over, and, where
replicas are configured, held until one confirms it (docs/contract.md, How a job runs)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import redis

from core.errors import CourierError, RetryableError
from core.pipelined import ScriptCall
from core.records import Record
from core.replication import Replicated
from workers.runtime import Runtime

log = logging.getLogger("courier.runner")
T = TypeVar("T")
# Redis away for now: unreachable, timed out, failing over (a demoted master refuses writes;
# through Sentinel that is a ConnectionError, and the next connection finds the new master).
UNREACHABLE = (
    redis.ConnectionError,
    redis.TimeoutError,
    redis.ReadOnlyError,
    redis.exceptions.NoScriptError,  # a pipeline that met the new master mid-way
)


@dataclass(slots=True)
class Outcome:
    """What happened to a job in this run, for logs and metrics."""

    status: str  # succeeded | failed | expired | requeued | skipped
    reason: str = ""
    model: str | None = None
    attempts: int = 0
    tenant: str | None = None
    priority: str | None = None
    retry_in_s: float | None = None  # requeued: when the job runs again
    limited_by: str | None = None  # requeued by the rate limiter: its reason (tokens, …)
    has_callback: bool = False  # ended, with a callback_url: its webhook is due
    message: str = ""  # failed: the error's message (provider text, redacted; never the prompt)
    # succeeded: the (id, priority) of child jobs its ending released, to enqueue at once
    released: list[tuple[str, str]] = field(default_factory=list)


@dataclass(slots=True)
class Claimed:
    """A job this worker holds the lease of, with its record as the claim read it."""

    job_id: str
    token: str
    record: Record


@dataclass
class Endings:
    """The store writes that end a run."""

    runtime: Runtime
    sleep: Callable[[float], None] = time.sleep

    def patiently(self, write: Callable[[], T]) -> T:
        """Retry a write of an outcome while Redis is unreachable or failing over, for as long
        as our lease could still be valid: an answer already paid for is worth keeping. Past
        that the lease has lapsed, the write is refused anyway and another worker runs the
        job."""
        deadline = time.monotonic() + self.runtime.settings.lease_ttl_s
        delay = 0.1
        while True:
            try:
                return write()
            except UNREACHABLE:
                if time.monotonic() + delay > deadline:
                    raise
                self.sleep(delay)
                delay = min(delay * 2, 1.0)  # a failover takes seconds: try each second

    def end(
        self,
        job_id: str,
        token: str,
        status: str,
        fields: dict[str, Any],
        record: Record,
        before: list[ScriptCall] | None = None,
        released: list[tuple[str, str]] | None = None,
    ) -> bool | None:
        """End the job (``before``: the last call's settle, run in the same round trip);
        None when it had ended elsewhere, else whether it has a callback. Where replicas are
        configured, the ending counts once they hold it. ``released``: see JobStore.finish."""
        tries: list[int] = []

        def finish() -> tuple[bool, str, bool]:
            tries.append(1)
            return self.runtime.store.finish(
                job_id, status, token=token, fields=fields, record=record, before=before or (),
                released=released,
            )  # fmt: skip

        ended, _, has_callback = self.patiently(finish)
        if not ended:
            if len(tries) < 2 or self.runtime.store.statuses([job_id]).get(job_id) != status:
                return None
            # An earlier try reached Redis and its answer was lost with the connection.
            has_callback = bool(record.get("callback_url"))
        if not self._replicated(job_id, status, finish):
            return None
        return bool(has_callback)

    def _replicated(
        self, job_id: str, status: str, finish: Callable[[], tuple[bool, str, bool]]
    ) -> bool:
        """Hold an ending (the lease kept, the callback unsent) until a replica confirms it,
        ending the job again on a new master that lost it in a failover; False when the job
        has meanwhile ended otherwise there. Past the lease TTL the ending is left on the
        master alone (logged): a later failover could still lose it, and the job would then
        run again once its lease lapsed — a repeated call, not a lost job."""
        replication = self.runtime.store.replication
        deadline = time.monotonic() + self.runtime.settings.lease_ttl_s
        delay = 0.05
        while replication.enabled:
            try:
                state = replication.confirm([job_id], status)
                if state is Replicated.CONFIRMED:
                    return True
                if state is Replicated.MISSING:
                    ended, previous, _ = finish()
                    if not ended and previous != status:
                        return False
            except UNREACHABLE:
                pass
            if time.monotonic() + delay > deadline:
                log.warning("job %s: no replica confirmed its ending; on the master only", job_id)
                return True
            self.sleep(delay)
            delay = min(delay * 2, 1.0)
        return True

    def fail(
        self,
        job_id: str,
        token: str,
        error: CourierError,
        attempts: int,
        record: Record,
        before: list[ScriptCall] | None = None,
        fields: dict[str, Any] | None = None,
    ) -> Outcome:
        details = error.to_record()
        if isinstance(error, RetryableError):
            details["retryable"] = True
        ending = {"error": details, **(fields or {})}
        has_callback = self.end(job_id, token, "failed", ending, record, before)
        if has_callback is None:
            return Outcome("skipped", reason="ended_elsewhere")
        return Outcome(
            "failed",
            reason=error.error_type,
            attempts=attempts,
            has_callback=has_callback,
            message=error.message,
        )

    def expire(
        self,
        job_id: str,
        token: str,
        allowed: tuple[str, ...] = ("running",),
        record: Record | None = None,
    ) -> Outcome:
        error = {
            "type": "expired",
            "message": "the job expired before it finished",
            "retryable": False,
        }
        ended, _, has_callback = self.runtime.store.finish(
            job_id, "expired", token=token, allowed=allowed, fields={"error": error}, record=record
        )
        return Outcome("expired", has_callback=bool(ended and has_callback))

    def later(
        self,
        job_id: str,
        token: str,
        delay_s: float,
        waiting_for: str,
        index: int,
        failures: int,
        unused_attempt: int = 0,
        error: CourierError | None = None,
        extra: dict[str, Any] | None = None,
    ) -> Outcome:
        """Hand the job back to run after ``delay_s``; ``unused_attempt``: the attempt the
        claim counted for a call this run never made, given back."""
        fields: dict[str, Any] = {"route_index": index, "route_failures": failures, **(extra or {})}
        if unused_attempt:
            fields["attempts"] = unused_attempt - 1
        if error is not None:
            fields["last_error"] = json.dumps(error.to_record())
        self.patiently(
            lambda: self.runtime.store.requeue(job_id, token, delay_s, waiting_for, fields)
        )
        return Outcome("requeued", reason=waiting_for, retry_in_s=round(delay_s, 3))
