"""``courier.deliver_callback``: one delivery attempt of a finished job's webhook.

The work is in :mod:`workers.webhooks`; a failed attempt is rescheduled in the durable
callback schedule (:mod:`core.callbacks`), never by sleeping or by a Celery countdown.
"""

from __future__ import annotations

from core.celery_app import app
from core.queues import DELIVER_CALLBACK
from workers.webhooks.sender import process_sender


@app.task(name=DELIVER_CALLBACK, acks_late=True, ignore_result=True, typing=False)
def deliver_callback(job_id: str) -> None:
    process_sender().deliver(job_id)
