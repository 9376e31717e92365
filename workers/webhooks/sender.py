"""This process's webhook sender: one shared, pinned ``httpx.Client`` per process."""

from __future__ import annotations

import os
import threading

from workers.runtime import get_runtime
from workers.webhooks.delivery import WebhookSender
from workers.webhooks.transport import shared_client

_senders: dict[int, WebhookSender] = {}
_lock = threading.Lock()


def process_sender() -> WebhookSender:
    """This process's sender (a forked child builds its own)."""
    runtime = get_runtime()
    pid = os.getpid()
    with _lock:
        sender = _senders.get(pid)
        if sender is None or sender.store is not runtime.store:
            settings = runtime.settings
            client = shared_client(settings.callback_allow_private, settings.callback_timeout_s)
            sender = _senders[pid] = WebhookSender(runtime.store, settings, client)
        return sender
