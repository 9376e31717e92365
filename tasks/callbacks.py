"""``courier.deliver_callback``: one delivery attempt of a finished job's webhook.

The work is in :mod:`workers.webhooks`; this task only hands it the process's sender
(one shared, pinned ``httpx.Client`` per process). A failed attempt is rescheduled in
the durable callback schedule, never by sleeping or by a Celery countdown.
"""

from __future__ import annotations

import os
import threading

from tasks.base import CourierTask
from workers.app import app
from workers.runtime import Runtime
from workers.webhooks import WebhookSender, shared_client

_senders: dict[int, WebhookSender] = {}
_lock = threading.Lock()


def get_sender(runtime: Runtime) -> WebhookSender:
    """This process's sender (a forked child builds its own)."""
    pid = os.getpid()
    with _lock:
        sender = _senders.get(pid)
        if sender is None or sender.store is not runtime.store:
            settings = runtime.settings
            client = shared_client(settings.callback_allow_private, settings.callback_timeout_s)
            sender = _senders[pid] = WebhookSender(runtime.store, settings, client)
        return sender


@app.task(name="courier.deliver_callback", base=CourierTask, bind=True, acks_late=True)
def deliver_callback(self: CourierTask, job_id: str) -> None:
    get_sender(self.runtime).deliver(job_id)
