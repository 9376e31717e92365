"""Courier's job intake: a gevent worker's own consumer of its job queues.

With the call pool (:mod:`workers.run.pool`) and the broker on the job store's Redis, the
worker does not take job messages through Celery's task consumer. The intake takes them:
one Lua script (``core.fair_scripts.FAIR_TAKE``) sorts newly arrived messages into tenant
lists, takes the next one in priority and then weighted fair order across tenants, and claims
its job, in one round trip; the job's call goes to the call pool. Celery's way cost a
BRPOP, kombu's unacked record (MULTI/EXEC), the claim, the ack, and Celery's request and trace
machinery around a task that only claimed: CPU comparable to the provider call's own (README,
Worker model).

Nothing accepted is lost: a message leaves Redis only in the same script that claims its job
(from then on the lease keeps it: a worker killed later has it handed on by the sweeper). When
the queues are empty the intake waits on BRPOP, and the message it returns is claimed at once;
if the worker dies in between, the job is queued with no message, which the sweeper finds and
enqueues again (``Sweeper.requeue_orphans``), as for kombu's own window between its BRPOP and
its unacked record.

The intake takes a job only while the call pool has room, so queued jobs stay in Redis in
priority order. Celery's consumer still takes the other queues (callbacks) and remote control.
Flower hears of each job's task from the job path's Flower hook (:mod:`workers.run.flower`).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import gevent
import redis
from celery import bootsteps
from celery.signals import worker_shutting_down

from config.celery import JOB_QUEUES
from config.settings import get_settings
from core import keys
from core.claims import Taken
from core.connections import store_client
from core.fair import FairTake
from workers.outage import redis_outage
from workers.run import pool as execution
from workers.run.hooks import Run
from workers.run.path import JobPath
from workers.run.pool import CallPool
from workers.run.runner import UNREACHABLE
from workers.run.wiring import job_path
from workers.runtime import get_runtime

log = logging.getLogger("courier.intake")

WAIT_S = 1.0  # longest wait for a slot or a message, so that a stop is noticed
# A message already off its queue (BRPOP): how long its claim is retried while Redis is away.
# A Sentinel failover takes down-after-milliseconds plus a few seconds.
CLAIM_PATIENCE_S = 60.0


def suits() -> bool:
    """The call pool runs here, and the broker is the job store's Redis (one Lua script
    reads both)."""
    settings = get_settings()
    return settings.worker_intake and execution.call_pool() is not None and settings.broker_is_store


class Intake:
    """Takes this worker's job messages while its call pool has room."""

    def __init__(self, path: JobPath, calls: CallPool, queues: list[str], consumer: Any):
        self.queues = queues
        self._path = path
        self._calls = calls
        self._lists = keys.broker_lists(queues)
        self._consumer = consumer  # its event dispatcher changes on each reconnect
        runtime = get_runtime()
        self._waiter = store_client(runtime.settings, max_connections=2)
        self._fair = FairTake(
            runtime.store.redis, runtime.settings.tenant_weights, runtime.settings.limits
        )
        self._greenlet: gevent.Greenlet | None = None
        self._stopping = False

    def start(self) -> None:
        self._stopping = False
        if self._greenlet is None or self._greenlet.dead:
            self._greenlet = gevent.spawn(self._take_while_running)

    def stop(self) -> None:
        """Take no more messages (within WAIT_S); the calls already taken run on."""
        self._stopping = True

    def _take_while_running(self) -> None:
        failures = 0
        while not self._stopping:
            if not self._calls.wait_for_room(WAIT_S):
                continue
            try:
                taken = self._take()
            except Exception as exc:  # the loop must outlive any fault: it is the worker's intake
                failures += 1
                delay = min(0.1 * 2**failures, 5.0)
                if isinstance(exc, redis.ConnectionError):
                    redis_outage.lost("intake", exc)
                elif isinstance(exc, redis.RedisError):
                    log.warning("intake: Redis error (%s); again in %.1f s", exc, delay)
                else:
                    log.exception("intake: taking a job failed; again in %.1f s", delay)
                gevent.sleep(delay)
                continue
            failures = 0
            redis_outage.back()
            if taken is not None:
                try:
                    self._hand_over(*taken)
                except Exception:  # one job's trouble must not stop the intake
                    log.exception("intake: job %s not handed over", taken[0].job_id)

    def _take(self) -> tuple[Taken, str, float] | None:
        runtime = get_runtime()
        token = runtime.leases.new_token()
        ttl = runtime.settings.lease_ttl_s
        taken = self._fair.take(self.queues, token, ttl)
        if taken is None:
            popped = self._waiter.brpop(self._lists, timeout=WAIT_S)
            if popped is None:
                return None
            taken = self._claim_popped(str(popped[1]), str(popped[0]), token, ttl)
        return None if taken is None else (taken, token, time.monotonic())

    def _claim_popped(self, message: str, source: str, token: str, ttl: float) -> Taken | None:
        """Claim the job of a message BRPOP took off its queue. The message is nowhere else
        now, so Redis away (restarting, failing over to a replica) is waited out for up to
        CLAIM_PATIENCE_S; past that, the sweeper enqueues the job again later."""
        deadline = time.monotonic() + CLAIM_PATIENCE_S
        delay = 0.1
        while True:
            try:
                return self._fair.take(self.queues, token, ttl, message, source)
            except UNREACHABLE:
                if time.monotonic() + delay > deadline:
                    log.error(
                        "intake: a taken message could not be claimed; the sweeper will "
                        "enqueue its job again"
                    )
                    raise
                gevent.sleep(delay)
                delay = min(delay * 2, 1.0)

    def _hand_over(self, taken: Taken, token: str, started: float) -> None:
        if not taken.job_id:
            log.error(
                "intake: a message on %s names no job (task %s); set aside in %s",
                ",".join(self.queues), taken.task_id, keys.SET_ASIDE,
            )  # fmt: skip
            return
        path = self._path
        claimed = path.runner.accept(taken.job_id, token, taken.claim)
        hostname = str(getattr(self._consumer, "hostname", "") or "")
        path.start(Run(taken.job_id, taken.task_id, hostname, started), claimed)


class JobIntake(bootsteps.StartStopStep):  # type: ignore[misc]
    """Starts the intake with the worker's consumer, on the job queues it was told to consume
    (``-Q``), and takes those queues away from Celery's task consumer."""

    requires = ("celery.worker.consumer.tasks:Tasks", "celery.worker.consumer.events:Events")

    def __init__(self, consumer: Any, **kwargs: Any) -> None:
        super().__init__(consumer, **kwargs)
        self.intake: Intake | None = None

    def start(self, consumer: Any) -> None:
        if _shutting_down:
            return  # a consumer restarted during a warm shutdown takes no more jobs
        if self.intake is None:
            calls = execution.call_pool()
            if calls is None or not suits():
                return
            consumed = {queue.name for queue in consumer.task_consumer.queues}
            queues = [name for name in JOB_QUEUES if name in consumed]
            if not queues:
                return
            for name in queues:
                consumer.cancel_task_queue(name)
            execution.ungate_broker()
            self.intake = Intake(job_path(), calls, queues, consumer)
            _intakes.append(self.intake)
            log.info("intake: taking jobs from %s", ", ".join(queues))
        self.intake.start()

    def stop(self, consumer: Any) -> None:
        if self.intake is not None:
            self.intake.stop()

    def shutdown(self, consumer: Any) -> None:
        self.stop(consumer)


_intakes: list[Intake] = []
_shutting_down = False


@worker_shutting_down.connect
def _stop_taking(**_: Any) -> None:
    """At once on SIGTERM: Celery stops its consumer's steps only later in a warm shutdown."""
    global _shutting_down
    _shutting_down = True
    for intake in _intakes:
        intake.stop()
