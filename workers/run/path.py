"""A job's path through a worker process, top to bottom.

take + claim   the intake (:mod:`.intake`) or the ``courier.run_job`` task
   │           → :meth:`JobPath.start` with the runner's claim
call pool      :mod:`.pool`: a plain greenlet per call, bounded by ``-c``
   │           (or in the task itself: prefork, threads, RabbitMQ)
runner         :mod:`.runner`: limits, the provider call, retries, fallbacks, breaker,
   │           the ending (one Lua script) or the hand-back to the schedule
hooks          :mod:`.hooks`: log lines, metrics, the callback (and Flower's view)
"""

from __future__ import annotations

import logging
import time

from workers.run.hooks import Hooks
from workers.run.pool import CallPool
from workers.run.runner import Claimed, JobRunner, Outcome

log = logging.getLogger("courier.jobs")

# The task's result as Flower shows it: the job runs on; its record says how it ends.
HANDED_TO_POOL = "claimed; running in the call pool"


class JobPath:
    """From a claim to the hooks, for one worker process."""

    def __init__(self, runner: JobRunner, hooks: Hooks, pool: CallPool | None) -> None:
        self.runner = runner
        self.hooks = hooks
        self.pool = pool

    def run_message(self, job_id: str) -> str | None:
        """The task's body: claim the job named by a message, then :meth:`start` it.
        Raises ``NotClaimed`` when the store is unreachable (the message goes back)."""
        started = time.monotonic()
        return self.start(job_id, self.runner.claim(job_id), started)

    def start(self, job_id: str, claimed: Claimed | Outcome, started: float) -> str | None:
        """Run a claimed job (in the call pool when there is one); an :class:`Outcome`
        instead of a claim (expired, skipped) goes straight to the hooks."""
        if isinstance(claimed, Outcome):
            self.hooks.over(job_id, claimed, started)
            return None
        self.hooks.started(claimed)
        if self.pool is None:
            self.run(claimed, started)
            return None
        self.pool.spawn(self.run, claimed, started)
        return HANDED_TO_POOL

    def run(self, claimed: Claimed, started: float) -> None:
        try:
            outcome = self.runner.run_claimed(claimed)
        except Exception as exc:
            # As a failed task would: the lease lapses and the sweeper hands the job on.
            log.error("job %s: run raised %s", claimed.job_id, type(exc).__name__)
            return
        self.hooks.over(claimed.job_id, outcome, started)
