"""The runner: claim a job, call the provider under the retry policy, end it once.

The route is the primary model then ``fallback_models``; each model gets up to
``max_attempts`` calls. Retryable errors back off (in place when short, through the
durable schedule when long); final errors end the job at once; an open circuit sends
the job to its next model or makes it wait. The route position survives requeues in
the record (``route_index``, ``route_failures``).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis

from core import conversations
from core.claims import Claim
from core.errors import CourierError, FinalError, NotClaimed, ProviderTimeout
from core.fair import FairSettle
from core.pipelined import ScriptCall
from core.records import Record
from core.results import ProviderResult, split_model
from workers.outage import redis_outage
from workers.providers.base import Provider
from workers.run.breaker import Admission, CircuitBreaker
from workers.run.endings import UNREACHABLE, Claimed, Endings, Outcome
from workers.run.outputs import OutputPublisher, OutputSink
from workers.run.ports import Limiter, Reservation
from workers.run.retry import RetryPolicy
from workers.run.spending import Reserved, Spending
from workers.runtime import Runtime

log = logging.getLogger("courier.runner")
__all__ = ["UNREACHABLE", "Claimed", "JobRunner", "Outcome"]
PARENT_RECHECK_S = 2.0  # a child claimed before its parent ended looks again this much later


@dataclass(frozen=True, slots=True)
class Place:
    """Where a run stands on its route: what a hand-back records."""

    job_id: str
    token: str
    index: int  # the model of the route
    failures: int  # failed calls to that model
    claimed_attempt: int  # the attempt the claim counted, while no call has used it (else 0)


@dataclass(frozen=True, slots=True)
class Gate:
    """A call let through the limits: its rate-limit and budget reservations, and the
    request to send (the budget's may cap ``max_tokens``)."""

    reservation: Reservation | None
    reserved: Reserved | None
    sent: dict[str, Any]


@dataclass
class JobRunner:
    runtime: Runtime
    get_provider: Callable[[str], Provider]
    breaker: CircuitBreaker
    limiter: Limiter | None = None
    spending: Spending | None = None  # cost per call, budgets, the answer cache
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    sleep: Callable[[float], None] = time.sleep
    outputs: OutputPublisher | None = None  # job events and streamed text ("stream": true)
    endings: Endings = field(init=False)
    fair: FairSettle = field(init=False)  # a start charged in estimated tokens, trued up

    def __post_init__(self) -> None:
        self.endings = Endings(self.runtime, self.sleep)
        self.fair = FairSettle(self.runtime.store.redis, self.runtime.settings.tenant_weights)

    def run(self, job_id: str) -> Outcome:
        claimed = self.claim(job_id)
        return claimed if isinstance(claimed, Outcome) else self.run_claimed(claimed)

    def claim(self, job_id: str) -> Claimed | Outcome:
        """Take the job (leased from here on), or say why not (skipped, expired)."""
        token = self.runtime.leases.new_token()
        try:
            claim = self.runtime.store.claim(job_id, token, self.runtime.settings.lease_ttl_s)
        except redis.RedisError as exc:
            raise NotClaimed(job_id) from exc
        return self.accept(job_id, token, claim)

    def accept(self, job_id: str, token: str, claim: Claim) -> Claimed | Outcome:
        """What the store's claim of the job under ``token`` means for this run."""
        if claim.status == "expired":
            return self.endings.expire(job_id, token="", allowed=("queued",))
        if claim.record is None:
            return Outcome("skipped", reason=claim.status)
        self.runtime.leases.add(job_id, token)
        return Claimed(job_id, token, claim.record)

    def run_claimed(self, claimed: Claimed) -> Outcome:
        job_id, token, record = claimed.job_id, claimed.token, claimed.record
        try:
            outcome = self._run_route(job_id, token, record)
            outcome.tenant = record.get("tenant")
            outcome.priority = record.get("priority")
            outcome.model = outcome.model or record.get("model")
            return outcome
        except redis.ConnectionError as exc:
            # The store is unreachable: leave the lease to lapse; the sweeper hands the
            # job to another worker once Redis answers again.
            redis_outage.lost(f"job {job_id}", exc)
            raise
        except redis.RedisError:
            log.exception("job %s: Redis error while running", job_id)
            raise
        except Exception as exc:  # a bug, not a provider fault: end the job, visibly
            log.exception("job %s: unexpected error", job_id)
            error = {"type": "provider_error", "message": f"internal error: {type(exc).__name__}"}
            fields = {"error": {**error, "retryable": False}}
            has_callback = self.endings.end(job_id, token, "failed", fields, record)
            return Outcome(
                "failed",
                reason="internal",
                has_callback=bool(has_callback),
                message=error["message"],
            )
        finally:
            self.runtime.leases.remove(job_id)

    # ---- the route ----------------------------------------------------------

    def _run_route(self, job_id: str, token: str, record: Record) -> Outcome:
        store = self.runtime.store
        route = [record["model"], *json.loads(record.get("fallback_models") or "[]")]
        index = int(record.get("route_index") or 0)
        failures = int(record.get("route_failures") or 0)
        max_attempts = int(record.get("max_attempts") or 5)
        timeout_s = float(record.get("timeout_s") or self.runtime.settings.provider_timeout_s)
        expires_at = float(record["expires_at"]) if record.get("expires_at") else None
        request: dict[str, Any] = json.loads(record["request"])
        kind = record.get("kind", "chat")
        streamed = kind == "chat" and record.get("stream") == "1"
        last_error: CourierError | None = None
        started = time.monotonic()
        # The claim counted this run's first call already; given back if the run is handed
        # back before making it.
        claimed_attempt = int(record.get("attempts") or 1)
        if record.get("parent_job_id"):  # a conversation's next turn: its whole transcript
            place = Place(job_id, token, index, failures, claimed_attempt)
            transcript = self._transcript(record, request, place)
            if isinstance(transcript, Outcome):
                return transcript
            request = transcript

        while index < len(route):
            model = route[index]
            admission = self.breaker.admit(model)
            open_s = admission.wait_s
            if open_s > 0:
                if index + 1 < len(route):
                    index, failures = index + 1, 0
                    continue
                return self.endings.later(
                    job_id, token, open_s, "circuit_open", index, failures, claimed_attempt
                )

            place = Place(job_id, token, index, failures, claimed_attempt)
            gate = self._pass_limits(place, record, model, request, admission, timeout_s)
            if isinstance(gate, Outcome):
                return gate
            reservation, reserved, sent = gate.reservation, gate.reserved, gate.sent

            if claimed_attempt:
                attempt, claimed_attempt = claimed_attempt, 0
                if self.outputs and index != int(record.get("route_index") or 0):
                    self.outputs.announce_model(job_id, token, model)  # not the claim's model
            else:
                attempt = store.begin_attempt(job_id, token, model)
            if attempt in (-1, -2):
                self._release(reservation)
                self._release_admission(model, admission)
                if self.spending is not None:
                    self.spending.release(record, model, reserved)
                if attempt == -1:
                    return Outcome("skipped", reason="lease_lost")
                return self.endings.expire(job_id, token, record=record)

            call_timeout = timeout_s
            if expires_at is not None:
                call_timeout = max(0.1, min(timeout_s, expires_at - time.time()))
            output = None
            if streamed and self.outputs:
                output = self.outputs.open(job_id, token, attempt, model)
            try:
                result = self._call(model, kind, sent, call_timeout, output)
            except CourierError as exc:
                if self.limiter is not None and reservation is not None:
                    self.limiter.settle(reservation, None, exc)
                settle = self._settle_spending(record, model, reserved, None, exc)
                last_error = exc
                self._record_outcome(model, admission, exc)
                if isinstance(exc, FinalError):
                    return self.endings.fail(job_id, token, exc, attempt, record, settle)
                for call in settle:
                    self.endings.patiently(call.run)
                failures += 1
                if failures >= max_attempts:
                    index, failures = index + 1, 0
                    continue
                retry_after = getattr(exc, "retry_after", None)
                delay = self.policy.delay(failures, retry_after)
                elapsed = time.monotonic() - started
                if delay <= self.policy.inline_max_s and elapsed + delay < 2 * timeout_s + 30:
                    self.sleep(delay)
                    continue
                return self.endings.later(job_id, token, delay, "retry", index, failures, error=exc)
            if self.limiter is not None and reservation is not None:
                self.limiter.settle(reservation, result, None)
            before = self._settle_spending(record, model, reserved, result, None)
            usage = result.usage
            used = usage.input_tokens + usage.output_tokens
            before += self.fair.calls(job_id, record, used, usage.output_tokens)
            fields = {"result": result.to_record()}
            released: list[tuple[str, str]] = []
            ended = self.endings.end(job_id, token, "succeeded", fields, record, before, released)
            self._record_outcome(model, admission, None)
            if ended is None:  # cancelled, or handed on when our lease lapsed: not ours to count
                return Outcome("skipped", reason="ended_elsewhere")
            return Outcome(
                "succeeded", model=model, attempts=attempt, has_callback=ended, released=released
            )

        assert last_error is not None or not route
        error = last_error or ProviderTimeout("no model answered")
        return self.endings.fail(job_id, token, error, int(record.get("attempts") or 0), record)

    def _settle_spending(
        self,
        record: Record,
        model: str,
        reserved: Reserved | None,
        result: ProviderResult | None,
        error: CourierError | None,
    ) -> list[ScriptCall]:
        """The call's cost settled against its reservation (run with the job's next write)."""
        if self.spending is None:
            return []
        return self.spending.after(record, model, reserved, result, error)

    def _transcript(
        self, record: Record, request: dict[str, Any], place: Place
    ) -> dict[str, Any] | Outcome:
        """A child job's request with its line's whole conversation, or how its run ends: back
        to wait (started before its parent ended) or failed (``parent_failed``, or a
        transcript that cannot be sent), giving back the attempt the claim counted."""
        try:
            return conversations.request_for(
                self.runtime.store.redis, record, request, self.runtime.settings
            )
        except conversations.ParentPending:  # started early (a stray message): wait
            return self._later(place, PARENT_RECHECK_S, "parent")
        except FinalError as exc:
            unused = place.claimed_attempt - 1
            return self.endings.fail(
                place.job_id, place.token, exc, unused, record, fields={"attempts": unused}
            )

    def _pass_limits(
        self,
        place: Place,
        record: Record,
        model: str,
        request: dict[str, Any],
        admission: Admission,
        timeout_s: float,
    ) -> Gate | Outcome:
        """Reserve the call's rate-limit tokens, then its worst-case cost against the
        tenant's budget; or hand the job back (its turn, or calls in flight that may give
        budget back, comes later) or fail it (``budget_exceeded``)."""
        reservation: Reservation | None = None
        if self.limiter is not None:
            tenant = record.get("tenant", "")
            reservation = self.limiter.reserve(
                model, request, record["priority"], job_id=place.job_id, tenant=tenant
            )
            if not reservation.granted:
                self._release_admission(model, admission)
                outcome = self._later(place, reservation.wait_s, "rate_limit")
                outcome.limited_by = reservation.reason
                return outcome
        if self.spending is None:
            return Gate(reservation, None, request)
        reserved = self.spending.reserve(record, model, request, timeout_s)
        if reserved.go:
            return Gate(reservation, reserved, reserved.request)
        self._release(reservation)
        self._release_admission(model, admission)
        wait_s, fields, refusal = self.spending.over_budget(record, reserved, place.claimed_attempt)
        if refusal is None:  # calls in flight may give back enough: wait for them
            return self._later(place, wait_s, "budget", extra=fields)
        attempts = int(fields.get("attempts", record.get("attempts") or 0))
        return self.endings.fail(
            place.job_id, place.token, refusal, attempts, record, fields=fields
        )

    def _later(
        self, place: Place, delay_s: float, waiting_for: str, extra: dict[str, Any] | None = None
    ) -> Outcome:
        job_id, token, index, failures, unused = (
            place.job_id,
            place.token,
            place.index,
            place.failures,
            place.claimed_attempt,
        )
        return self.endings.later(
            job_id, token, delay_s, waiting_for, index, failures, unused, extra=extra
        )

    def _call(
        self,
        model: str,
        kind: str,
        request: dict[str, Any],
        timeout: float,
        output: OutputSink | None = None,
    ) -> ProviderResult:
        provider_name, model_name = split_model(model)
        provider = self.get_provider(provider_name)
        if kind == "embedding":
            return provider.embed(model_name, request, timeout=timeout)
        if output is not None:
            return output.call(provider, model_name, request, timeout)
        return provider.complete(model_name, request, timeout=timeout)

    # ---- endings and hand-backs ---------------------------------------------

    def _record_outcome(self, model: str, admission: Admission, error: CourierError | None) -> None:
        """Circuit bookkeeping must never cost a job its answer."""
        try:
            self.breaker.record(model, admission, error)
        except redis.RedisError as exc:
            log.warning("circuit breaker update for %s failed: %s", model, exc)

    def _release_admission(self, model: str, admission: Admission) -> None:
        try:
            self.breaker.release(model, admission)
        except redis.RedisError as exc:
            log.warning("circuit breaker update for %s failed: %s", model, exc)

    def _release(self, reservation: Reservation | None) -> None:
        if self.limiter is not None and reservation is not None:
            self.limiter.settle(reservation, None, None)
