"""``courier.run_job``: run one job, named by id (the message carries nothing else).

A gevent worker whose broker is the job store's Redis takes job messages with its intake
(:mod:`workers.run.intake`), not through this task. Elsewhere (``COURIER_WORKER_INTAKE=false``,
prefork or thread pools, RabbitMQ) this task claims the job and starts it on the process's
job path (:mod:`workers.run.path`).
"""

from __future__ import annotations

import logging

from celery import Task
from celery.exceptions import Reject

from core.celery_app import app
from core.errors import NotClaimed
from core.queues import RUN_JOB
from workers.outage import redis_outage
from workers.run.hooks import Run
from workers.run.wiring import job_path

log = logging.getLogger("courier.jobs")


# send_events=False: the job path tells Flower the job's state (workers/run/flower.py).
@app.task(
    name=RUN_JOB, bind=True, acks_late=True, ignore_result=True, typing=False, send_events=False
)
def run_job(self: Task, job_id: str) -> None:
    request = self.request
    try:
        job_path().run_message(Run(job_id, request.id or "", request.hostname or ""))
    except NotClaimed as exc:
        redis_outage.lost("claim", exc.__cause__ or exc)
        log.debug("job %s: store unreachable before the claim; message handed back", job_id)
        raise Reject(requeue=True) from None
