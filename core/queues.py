"""Putting work on the Celery queues: by task name, with the job id as the only argument."""

from __future__ import annotations

from celery import Celery

from config.celery import CALLBACK_QUEUE, message_priority, queue_for

RUN_JOB = "courier.run_job"
DELIVER_CALLBACK = "courier.deliver_callback"


def enqueue_job(app: Celery, job_id: str, priority: str) -> None:
    app.send_task(
        RUN_JOB,
        args=[job_id],
        queue=queue_for(priority),
        priority=message_priority(priority, app.conf.broker_url or ""),
    )


def enqueue_jobs(app: Celery, jobs: list[tuple[str, str]]) -> None:
    """:func:`enqueue_job` for each ``(job id, priority)`` over one producer connection."""
    url = app.conf.broker_url or ""
    with app.producer_or_acquire() as producer:
        for job_id, priority in jobs:
            app.send_task(
                RUN_JOB,
                args=[job_id],
                queue=queue_for(priority),
                priority=message_priority(priority, url),
                producer=producer,
            )


def enqueue_callback(app: Celery, job_id: str) -> None:
    app.send_task(DELIVER_CALLBACK, args=[job_id], queue=CALLBACK_QUEUE)
