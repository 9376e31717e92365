"""``courier.deliver_callback``: deliver a finished job's webhook (see workers.webhooks)."""

from __future__ import annotations

from tasks.base import CourierTask
from workers.app import app


@app.task(name="courier.deliver_callback", base=CourierTask, bind=True, acks_late=True)
def deliver_callback(self: CourierTask, job_id: str) -> None:
    # Filled in by the webhook delivery issue; until then callbacks stay pending.
    return None
