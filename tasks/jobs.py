"""``courier.run_job``: run one job, named by id (the message carries nothing else)."""

from __future__ import annotations

from tasks import lifecycle  # noqa: F401  (connects the worker's background loops)
from tasks.base import CourierTask
from workers.app import app


@app.task(name="courier.run_job", base=CourierTask, bind=True, acks_late=True)
def run_job(self: CourierTask, job_id: str) -> None:
    self.runner.run(job_id)
