"""Background loops of each worker process: lease renewal and the shared sweep.

Lease renewal keeps this process's running jobs its own. The sweep, run by one worker
process at a time (a Redis lock), hands back jobs whose lease lapsed, expires queued
jobs past ``expires_at``, enqueues scheduled jobs that are due (retries, waits), moves
jobs that waited longer than ``priority_aging_s`` one queue up (low → normal → high, so
low work is delayed but never starved), and enqueues callbacks that are due.

Callback attempts are due at a precise time (``COURIER_CALLBACK_RETRY_SCHEDULE`` ± 20 %),
so the sweeping process also runs a callback timer that sleeps until the earliest one is
due (looking again at least every :data:`CALLBACK_POLL_S`): taken only by the sweep, a
2 s wait became 2 or 3 s, whichever sweep came first after it (1.8-4.4 s measured).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import redis

from config.celery import PRIORITIES
from core import keys, scripts
from workers.outage import redis_outage
from workers.runtime import Runtime

log = logging.getLogger("courier.sweeper")


Hook = Callable[[str], None]
CALLBACK_POLL_S = 0.2  # the callback timer looks at the schedule's head at least this often


@dataclass
class Sweeper:
    runtime: Runtime
    enqueue_job: Callable[[str, str], None]
    enqueue_callback: Hook
    on_expired: Callable[[str, bool], None]
    due_callbacks: Callable[[], list[str]] = lambda: []
    next_callback_at: Callable[[], float | None] = lambda: None  # epoch s of the earliest
    restore_messages: Callable[[], None] = lambda: None
    # Queued jobs older than this while their broker queue is empty have lost their message
    # (a broker outage at the wrong moment): they are enqueued again. None: never.
    orphan_after_s: float | None = None
    restore_every: int = 5  # sweeps between broker restores
    stop_event: threading.Event = field(default_factory=threading.Event)
    stop_sweeps_event: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._lock = self.runtime.redis.register_script(scripts.ACQUIRE_OR_RENEW)
        self._sweeping = False  # this process held the sweep lock at the last sweep

    def holds_lock(self) -> bool:
        ttl_ms = int(max(3.0, self.runtime.settings.sweep_interval_s * 5) * 1000)
        return bool(self._lock(keys=[keys.SWEEPER_LOCK], args=[self.runtime.identity, ttl_ms]))

    def sweep_once(self) -> dict[str, int]:
        store = self.runtime.store
        self._sweeps = getattr(self, "_sweeps", 0) + 1
        orphans = 0
        if (self._sweeps - 1) % self.restore_every == 0:  # the first sweep, then every nth
            self.restore_messages()
            orphans = self.requeue_orphans()
        recovered = store.recover_lapsed()
        if recovered:
            log.warning("recovered %d job(s) whose worker stopped renewing", len(recovered))
        expired = 0
        for job_id in store.expired_queued():
            ended, _, has_callback = store.finish(
                job_id,
                "expired",
                allowed=("queued",),
                fields={
                    "error": {
                        "type": "expired",
                        "message": "the job expired before it started",
                        "retryable": False,
                    }
                },
            )
            if ended:
                expired += 1
                self.on_expired(job_id, has_callback)
            else:
                store.redis.zrem(keys.EXPIRIES, job_id)
        aged = 0
        for source, target in (("normal", "high"), ("low", "normal")):
            for job_id in store.age(source, target, self.runtime.settings.priority_aging_s):
                self.enqueue_job(job_id, target)
                aged += 1
        due = store.due()
        for index, (job_id, priority) in enumerate(due):
            try:
                self.enqueue_job(job_id, priority)
            except Exception as exc:  # broker unreachable: the rest are due again at once
                log.warning("enqueue of scheduled jobs failed (%s); retrying next sweep", exc)
                store.reschedule_now([j for j, _ in due[index:]])
                break
        callbacks = self.due_callbacks()
        for job_id in callbacks:
            self.enqueue_callback(job_id)
        return {
            "recovered": len(recovered),
            "expired": expired,
            "enqueued": len(due),
            "callbacks": len(callbacks),
            "aged": aged,
            "orphans": orphans,
        }

    def requeue_orphans(self) -> int:
        if self.orphan_after_s is None:
            return 0
        found = 0
        for priority in PRIORITIES:
            for job_id in self.runtime.store.orphans(priority, self.orphan_after_s):
                log.warning("job %s had no message left: enqueued again", job_id)
                self.enqueue_job(job_id, priority)
                found += 1
        return found

    def renew_leases(self) -> None:
        store = self.runtime.store
        lost = store.renew(self.runtime.leases.snapshot(), self.runtime.settings.lease_ttl_s)
        for job_id, status in store.statuses(lost).items():
            if status in ("succeeded", "failed"):  # ended by its run a moment ago: all is well
                log.debug("job %s: %s before its lease was renewed", job_id, status)
            elif status in ("cancelled", "expired"):
                log.info("job %s: %s while its call ran; the answer is dropped", job_id, status)
            else:
                log.warning(
                    "job %s: lease lapsed and the job was handed on (now %s); this run's "
                    "answer is dropped",
                    job_id,
                    status or "gone",
                )

    def run_sweeps(self) -> None:
        interval = self.runtime.settings.sweep_interval_s
        while not (self.stop_sweeps_event.wait(interval) or self.stop_event.is_set()):
            try:
                self._sweeping = self.holds_lock()
                if self._sweeping:
                    self.sweep_once()
                redis_outage.back()
            except redis.ConnectionError as exc:
                redis_outage.lost("sweep", exc)
            except redis.RedisError as exc:
                log.warning("sweep skipped: %s", exc)
            except Exception:
                log.exception("sweep failed")

    def run_callback_timer(self) -> None:
        """Enqueue callback attempts as they fall due (in the sweeping process only)."""
        while not (self.stop_sweeps_event.is_set() or self.stop_event.is_set()):
            wait = CALLBACK_POLL_S
            try:
                if self._sweeping:
                    for job_id in self.due_callbacks():
                        self.enqueue_callback(job_id)
                    due = self.next_callback_at()
                    if due is not None:
                        wait = min(wait, max(0.0, due - time.time()))
            except Exception:  # Redis or the broker away: the sweep loop says so, once
                wait = 1.0
            self.stop_sweeps_event.wait(max(wait, 0.002))

    def run_renewals(self) -> None:
        interval = self.runtime.settings.lease_ttl_s / 4
        while not self.stop_event.wait(interval):
            try:
                self.renew_leases()
                redis_outage.back()
            except redis.ConnectionError as exc:
                redis_outage.lost("lease renewal", exc)
            except redis.RedisError as exc:
                log.warning("lease renewal failed: %s", exc)
            except Exception:
                log.exception("lease renewal failed")

    def start(self) -> None:
        for target in (self.run_renewals, self.run_sweeps, self.run_callback_timer):
            threading.Thread(target=target, name=target.__name__, daemon=True).start()

    def stop_sweeps(self) -> None:
        """On warm shutdown: stop sweeping but keep renewing the leases of running jobs."""
        self.stop_sweeps_event.set()

    def stop(self) -> None:
        self.stop_sweeps_event.set()
        self.stop_event.set()
