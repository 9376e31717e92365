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

import redis

from workers.run.flower import FlowerView
from workers.run.hooks import Hooks, Run
from workers.run.pool import CallPool
from workers.run.runner import Claimed, JobRunner, Outcome

log = logging.getLogger("courier.jobs")


class JobPath:
    """From a claim to the hooks, for one worker process."""

    def __init__(self, runner: JobRunner, hooks: Hooks, pool: CallPool | None) -> None:
        self.runner = runner
        self.hooks = hooks
        self.pool = pool
        self.flower: FlowerView | None = None  # the hook that also needs the worker's consumer

    def run_message(self, run: Run) -> None:
        """The task's body: claim the job named by a message, then :meth:`start` it.
        Raises ``NotClaimed`` when the store is unreachable (the message goes back)."""
        self.start(run, self.runner.claim(run.job_id))

    def start(self, run: Run, claimed: Claimed | Outcome) -> None:
        """Run a claimed job (in the call pool when there is one); an :class:`Outcome`
        instead of a claim (expired, skipped) goes straight to the hooks."""
        if isinstance(claimed, Outcome):
            self.hooks.over(run, claimed)
        elif self.pool is None:
            self.hooks.started(run, claimed)
            self.run(run, claimed)
        else:
            self.hooks.started(run, claimed)
            self.pool.spawn(self.run, run, claimed)

    def run(self, run: Run, claimed: Claimed) -> None:
        try:
            outcome = self.runner.run_claimed(claimed)
        except redis.ConnectionError as exc:
            # Redis is away (said once by workers.outage): the lease lapses and the sweeper
            # hands the job on
            outcome = Outcome("skipped", reason="run_raised", message=type(exc).__name__)
        except Exception as exc:
            # As a failed task would: the lease lapses and the sweeper hands the job on.
            log.error("job %s: run raised %s", run.job_id, type(exc).__name__)
            outcome = Outcome("skipped", reason="run_raised", message=type(exc).__name__)
        self.hooks.over(run, outcome)
