"""What happens beside the job's path, one concern per hook: logs, metrics, the callback.

The path (:mod:`workers.run.path`) calls every hook at two points: when a job starts
(claimed, its lease held) and when a run is over (the runner's :class:`Outcome`: ended,
handed back to the schedule, or not this run's to change). Each call names the :class:`Run`:
the job and the ``courier.run_job`` task that carried it. A hook that fails is logged and
skipped: bookkeeping never costs a job its answer. Flower's view is the hook of
:mod:`workers.run.flower`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import redis

from core.logs import job_event
from core.metrics import count_finished
from workers.metrics import WorkerMetrics
from workers.run.runner import Claimed, Outcome

log = logging.getLogger("courier.jobs")


@dataclass(slots=True)
class Run:
    """One run of a job: the job, the ``courier.run_job`` task (message) that started it, the
    worker that runs it, and when it started (monotonic)."""

    job_id: str
    task_id: str = ""
    hostname: str = ""
    started: float = field(default_factory=time.monotonic)

    @property
    def runtime_s(self) -> float:
        return time.monotonic() - self.started


class Hook(Protocol):
    def started(self, run: Run, claimed: Claimed) -> None: ...

    def over(self, run: Run, outcome: Outcome) -> None: ...


class LogLines:
    """One JSON line when a job starts and one when its run is over."""

    def started(self, run: Run, claimed: Claimed) -> None:
        record = claimed.record
        job_event(
            log,
            "job.started",
            job_id=run.job_id,
            tenant=record.get("tenant"),
            model=record.get("model"),
            priority=record.get("priority"),
            attempt=int(record.get("attempts") or 1),
        )

    def over(self, run: Run, outcome: Outcome) -> None:
        job_id = run.job_id
        if outcome.status == "skipped":
            if outcome.reason == "ended_elsewhere":  # cancelled, or handed on meanwhile
                job_event(log, "job.outcome_dropped", job_id=job_id, model=outcome.model)
            return  # else a duplicate or stale message: the job is not this run's to change
        fields: dict[str, object] = {}
        if outcome.status == "requeued":  # when it runs again, and which limit sent it back
            fields["retry_in_s"] = outcome.retry_in_s
            if outcome.limited_by:
                fields["limited_by"] = outcome.limited_by
        job_event(
            log,
            f"job.{outcome.status}",
            job_id=job_id,
            tenant=outcome.tenant,
            model=outcome.model,
            attempt=outcome.attempts,
            reason=outcome.reason or None,
            duration_ms=round(run.runtime_s * 1000),
            **fields,
        )


class Metrics:
    """Outcomes counted by status, model and priority; hand-backs by reason."""

    def __init__(self, metrics: Callable[[], WorkerMetrics], client: redis.Redis) -> None:
        self._metrics = metrics  # per process: a forked child counts its own
        self._redis = client

    def started(self, run: Run, claimed: Claimed) -> None:
        pass

    def over(self, run: Run, outcome: Outcome) -> None:
        if outcome.status == "skipped":
            return
        if outcome.status == "requeued":
            self._metrics().job_requeued(outcome.reason)
        elif outcome.model is None:  # expired before its claim: the record names model, priority
            count_finished(self._redis, run.job_id, outcome.status)
        else:
            self._metrics().job_finished(outcome.status, outcome.model, outcome.priority)


class Callback:
    """An ended job with a ``callback_url`` gets its webhook queued."""

    def __init__(self, enqueue_callback: Callable[[str], None]) -> None:
        self._enqueue = enqueue_callback

    def started(self, run: Run, claimed: Claimed) -> None:
        pass

    def over(self, run: Run, outcome: Outcome) -> None:
        if outcome.has_callback:
            self._enqueue(run.job_id)


class Children:
    """A succeeded job's waiting child jobs (core.conversations) are queued at once. Should
    this process die first, the schedule's safety net queues them (FINISH put them there)."""

    def __init__(self, enqueue_job: Callable[[str, str], None]) -> None:
        self._enqueue = enqueue_job

    def started(self, run: Run, claimed: Claimed) -> None:
        pass

    def over(self, run: Run, outcome: Outcome) -> None:
        for job_id, priority in outcome.released:
            self._enqueue(job_id, priority)


class Hooks:
    """Every hook, in order; each one's failure is its own."""

    def __init__(self, hooks: Sequence[Hook]) -> None:
        self.hooks = list(hooks)

    def started(self, run: Run, claimed: Claimed) -> None:
        for hook in self.hooks:
            try:
                hook.started(run, claimed)
            except Exception:
                log.exception("hook %s failed at the start of %s", type(hook).__name__, run.job_id)

    def over(self, run: Run, outcome: Outcome) -> None:
        for hook in self.hooks:
            try:
                hook.over(run, outcome)
            except Exception:
                log.exception("hook %s failed at the end of %s", type(hook).__name__, run.job_id)
