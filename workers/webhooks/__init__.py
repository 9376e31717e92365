"""Webhook delivery, the worker's side: one signed attempt (Standard Webhooks) over a client
that connects only to checked addresses, retried on the durable schedule of
:mod:`core.callbacks`.

- :mod:`.transport`: the per-process ``httpx.Client`` that connects only to checked addresses
- :mod:`.payload`: the event body, bounded in size
- :mod:`.delivery`: one attempt and its bookkeeping

Shared with the API (in :mod:`core`): :mod:`core.ssrf` (the address rules, checked at
submission), :mod:`core.signing` (secrets, ``webhook-id``, signature headers),
:mod:`core.callbacks` (schedule, redelivery, counters).
"""

from __future__ import annotations

from workers.webhooks.delivery import Delivery, WebhookSender
from workers.webhooks.transport import build_client, shared_client

__all__ = ["Delivery", "WebhookSender", "build_client", "shared_client"]
