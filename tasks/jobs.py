"""``courier.run_job``: run one job, named by id (the message carries nothing else).

A gevent worker whose broker is the job store's Redis takes job messages with its intake
(:mod:`workers.run.intake`), not through this task. Elsewhere (``COURIER_WORKER_INTAKE=false``,
prefork or thread pools, RabbitMQ) this task claims the job and starts it on the process's
job path (:mod:`workers.run.path`).
"""

from __future__ import annotations

import logging

from celery.exceptions import Reject

from core.celery_app import app
from core.errors import NotClaimed
from core.queues import RUN_JOB
from workers.run.wiring import job_path

log = logging.getLogger("courier.jobs")


@app.task(name=RUN_JOB, acks_late=True, ignore_result=True, typing=False)
def run_job(job_id: str) -> str | None:
    """Returns what Flower shows as the task's result: where the job's call went."""
    try:
        return job_path().run_message(job_id)
    except NotClaimed:
        log.warning("job %s: store unreachable before the claim; message handed back", job_id)
        raise Reject(requeue=True) from None
