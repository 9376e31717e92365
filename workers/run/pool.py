"""Where a job's provider call runs in a gevent worker: the process's call pool.

The job is taken in by the intake (``workers.run.intake``; or, with it off, by the Celery task),
which claims it (a lease from then on, renewed in the background) and hands the rest of the
run to a plain greenlet of this pool. A Celery task greenlet held for the whole
call kept its request, its message and Celery's trace frames alive: more memory per call in
flight than a plain greenlet of this pool (README, Worker model).

The pool, not Celery's, bounds the calls in flight: while it is full the intake takes no
message (:meth:`CallPool.wait_for_room`; with the intake off, Celery's consumer asks
:func:`has_room` through ``workers.broker``), so queued jobs stay in
Redis in priority order, exactly as when each task held its slot. A worker that dies after
the ack loses nothing: the job is leased, and the sweeper hands it on once the lease lapses.
Its cost: Flower lists a job's task as done once it is claimed; the job record (API,
metrics) says what runs.

Only a gevent worker on a Redis broker uses the pool (the gate is Redis-specific); other
pools and brokers run the call in the task, as before.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any


class CallPool:
    """At most ``size`` greenlets, each running one job's call."""

    def __init__(self, size: int) -> None:
        from celery.worker import state
        from gevent.pool import Pool

        self._pool = Pool(size)
        self._worker_state = state  # asked on every consumer poll: imported once, here

    def has_room(self) -> bool:
        """Room for one more job, counting those taken in and not yet handed over: a
        message the consumer takes while its task has not yet reached the pool."""
        taken_in = len(self._worker_state.reserved_requests)
        return bool(len(self._pool) + taken_in < self._pool.size)

    def wait_for_room(self, timeout: float) -> bool:
        """Wait up to ``timeout`` for a free slot (the intake takes its jobs straight in)."""
        return bool(self._pool.wait_available(timeout=timeout))

    def spawn(self, run: Callable[..., Any], *args: Any) -> None:
        """Start ``run`` in the pool; waits for a slot only when a race filled it."""
        self._pool.spawn(run, *args)

    def drain(self, timeout: float) -> bool:
        """Wait up to ``timeout`` for every call to end; True when none is left."""
        return bool(self._pool.join(timeout=timeout))

    def __len__(self) -> int:
        return len(self._pool)


_calls: CallPool | None = None
_broker_gated = True  # False once the intake, not Celery, takes in this worker's jobs


def suits(broker_url: str) -> bool:
    """A gevent worker on a Redis broker."""
    from config.celery import REDIS_SCHEMES

    if "gevent" not in sys.modules or not broker_url.startswith(REDIS_SCHEMES):
        return False
    from gevent import monkey

    return bool(monkey.is_module_patched("socket"))


def install(size: int) -> CallPool:
    global _calls
    _calls = CallPool(size)
    return _calls


def call_pool() -> CallPool | None:
    """This process's call pool, if it runs calls outside Celery's tasks."""
    return _calls


def ungate_broker() -> None:
    """Celery's consumer takes no job messages any more (the intake does): the pool's room
    no longer holds it back."""
    global _broker_gated
    _broker_gated = False


def has_room() -> bool:
    """May the broker consumer take another message? Always, without a call pool or once
    the intake takes the jobs."""
    return _calls is None or not _broker_gated or _calls.has_room()
