"""Delivering a finished job's webhook: one attempt per task run, the next one scheduled.

Outcomes (docs/contract.md, Webhooks): a 2xx delivers; a 410, or a host that now resolves
to a non-public address, stops (``failed``); anything else (another status, a 3xx, since
redirects are never followed, a timeout, a refused connection) is retried on the schedule,
after which the callback is ``failed`` (a dead letter, counted in
:data:`keys.CALLBACK_STATS`) until redelivered. Every attempt is logged on the job's
``callback`` (the last 20).

One delivery of a job runs at a time (a short lock in Redis); a second message for the
same job while one is in flight is dropped, and one that arrives before the next attempt
is due waits for the schedule. Before sending, the job's schedule entry is pushed past
the lock's lifetime, so a worker dying mid-attempt loses nothing: the sweeper brings it
back.
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
import redis

from config.settings import Settings
from core import callbacks as schedule
from core import keys, scripts
from core.callbacks import callback_state
from core.errors import CallbackHostUnresolved, UnsafeCallbackURL
from core.jobs import TERMINAL, iso
from core.records import Record
from core.retry_after import retry_after_seconds
from core.signing import event_id, signed_headers, signing_secrets
from core.ssrf import parse_callback_url
from core.store import JobStore
from workers.webhooks import payload

log = logging.getLogger("courier.webhooks")

LOG_KEEP = 20
RESPONSE_CHARS = 256
RESPONSE_READ_BYTES = 2048
EARLY_SLACK_S = 1.0


@dataclass(slots=True)
class Attempt:
    """One POST to the receiver."""

    status_code: int | None
    latency_ms: int
    error: str | None = None
    response: str = ""
    retry_after: float | None = None
    final: bool = False  # no point retrying (410, a refused target)

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


@dataclass(slots=True)
class Delivery:
    """What one task run did, for logs and tests."""

    status: str  # delivered | failed | pending (retry scheduled) | skipped
    reason: str = ""
    attempts: int = 0
    next_attempt_at: float | None = None


def _parse_iso(value: Any) -> float | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


class WebhookSender:
    """Sends webhooks for one worker process: a shared HTTP client, the signing secrets."""

    def __init__(
        self,
        store: JobStore,
        settings: Settings,
        client: httpx.Client,
        *,
        secrets: Sequence[str] | None = None,
        rand: random.Random | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.redis: redis.Redis = store.redis
        self.settings = settings
        self.client = client
        self._secrets = list(secrets) if secrets else None
        self.rand = rand or random.Random()
        self.clock = clock
        self._release = self.redis.register_script(scripts.RELEASE)

    @property
    def secrets(self) -> list[str]:
        if self._secrets is None:
            self._secrets = signing_secrets(
                self.settings.webhook_secret, self.settings.webhook_secret_previous, self.redis
            )
        return self._secrets

    @property
    def lock_ttl_s(self) -> float:
        # connect + send + read each bounded by the timeout, plus the pool wait.
        return self.settings.callback_timeout_s * 4 + 10

    def deliver(self, job_id: str) -> Delivery:
        """Make the next attempt of the job's pending callback, if one is due now."""
        token = uuid.uuid4().hex
        lock = keys.callback_lock(job_id)
        if not self.redis.set(lock, token, nx=True, px=int(self.lock_ttl_s * 1000)):
            return Delivery("skipped", "another delivery of this event is in flight")
        try:
            return self._deliver_locked(job_id)
        finally:
            self._release(keys=[lock], args=[token])

    def _deliver_locked(self, job_id: str) -> Delivery:
        record = self.store.get(job_id)
        if record is None or not record.get("callback_url") or record["status"] not in TERMINAL:
            schedule.unschedule(self.redis, job_id)
            return Delivery("skipped", "no finished job with a callback_url")
        state = callback_state(record)
        if state.get("status") != "pending":
            schedule.unschedule(self.redis, job_id)
            return Delivery("skipped", f"callback is {state.get('status')}")
        now = self.clock()
        due = _parse_iso(state.get("next_attempt_at"))
        if due is not None and due > now + EARLY_SLACK_S:
            # Early (a duplicate message): keep the entry at its time, not at the sweep's
            # redo score, which would hold the attempt back for minutes.
            schedule.schedule_at(self.redis, job_id, due)
            return Delivery("skipped", "next attempt not due yet", next_attempt_at=due)
        schedule.schedule_at(self.redis, job_id, now + self.lock_ttl_s)

        body, truncated = payload.body(
            payload.event(record), self.settings.callback_max_payload_bytes
        )
        msg_id = event_id(job_id, record["status"])
        attempt = self.attempt(state["url"], msg_id, body)
        return self._record(job_id, record, state, attempt, truncated)

    def attempt(self, url: str, msg_id: str, body: bytes) -> Attempt:
        """POST ``body`` once, freshly signed; never raises for network trouble."""
        started = time.monotonic()

        def took() -> int:
            return int((time.monotonic() - started) * 1000)

        try:
            parse_callback_url(url)
            headers = signed_headers(self.secrets, msg_id, body)
            with self.client.stream("POST", url, content=body, headers=headers) as response:
                head = bytearray()
                for chunk in response.iter_bytes():
                    head += chunk
                    if len(head) >= RESPONSE_READ_BYTES:
                        break
                code = response.status_code
                error = None
                if 300 <= code < 400:
                    error = f"redirect to {response.headers.get('location', '?')!r} not followed"
                elif not 200 <= code < 300:
                    error = f"HTTP {code}"
                return Attempt(
                    status_code=code,
                    latency_ms=took(),
                    error=error,
                    response=head.decode("utf-8", "replace")[:RESPONSE_CHARS],
                    retry_after=retry_after_seconds(response.headers.get("retry-after")),
                    final=code == 410,
                )
        except CallbackHostUnresolved as exc:
            return Attempt(None, took(), str(exc))
        except UnsafeCallbackURL as exc:
            return Attempt(None, took(), f"refused: {exc}", final=True)
        except httpx.TimeoutException as exc:
            limit = self.settings.callback_timeout_s
            return Attempt(None, took(), f"timed out after {limit:g}s ({type(exc).__name__})")
        except httpx.HTTPError as exc:
            return Attempt(None, took(), f"{type(exc).__name__}: {exc}"[:RESPONSE_CHARS])

    def _record(
        self,
        job_id: str,
        record: Record,
        state: dict[str, Any],
        attempt: Attempt,
        truncated: bool,
    ) -> Delivery:
        now = self.clock()
        attempts = int(state["attempts"]) + 1
        entry = {
            "at": iso(now),
            "status_code": attempt.status_code,
            "latency_ms": attempt.latency_ms,
            "error": attempt.error,
            "response": attempt.response,
        }
        if truncated:
            entry["truncated"] = True
        state.update(
            attempts=attempts,
            last_status_code=attempt.status_code,
            log=[*state["log"], entry][-LOG_KEEP:],
        )
        stats = self.redis.pipeline(transaction=False)
        stats.hincrby(keys.CALLBACK_STATS, "attempts", 1)
        failures = attempts - int(record.get("callback_round") or 0)
        delay = None
        if not attempt.delivered and not attempt.final:
            delay = schedule.next_delay(
                self.settings.callback_retry_schedule, failures, attempt.retry_after, self.rand
            )
        if attempt.delivered:
            outcome = Delivery("delivered", attempts=attempts)
        elif delay is None:
            why = "stopped by the receiver (410)" if attempt.status_code == 410 else "gave up"
            outcome = Delivery("failed", attempt.error or why, attempts=attempts)
        else:
            outcome = Delivery("pending", attempt.error or "", attempts, now + delay)
        state["status"] = outcome.status
        state["next_attempt_at"] = iso(outcome.next_attempt_at)
        self.store.set_fields(job_id, {"callback": state})
        if outcome.next_attempt_at is not None:
            schedule.schedule_at(self.redis, job_id, outcome.next_attempt_at)
        else:
            schedule.unschedule(self.redis, job_id)
            stats.hincrby(keys.CALLBACK_STATS, outcome.status, 1)
        stats.execute()
        log_fn = log.warning if outcome.status == "failed" else log.info
        log_fn(
            "job %s callback attempt %d: %s → %s",
            job_id,
            attempts,
            attempt.error or attempt.status_code,
            outcome.status,
        )
        return outcome
