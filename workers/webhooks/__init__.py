"""Webhook delivery (SPEC §4): signed (Standard Webhooks), retried on a durable schedule,
SSRF-safe (checked at submission and pinned at connection), redeliverable.

- :mod:`.signing`: secrets, the stable ``webhook-id``, signature headers
- :mod:`.ssrf`: :func:`check_callback_url`, the address rules
- :mod:`.transport`: the per-process ``httpx.Client`` that connects only to checked addresses
- :mod:`.payload`: the event body, bounded in size
- :mod:`.schedule`: retry delays, ``Retry-After``, the ``CALLBACKS_SCHEDULED`` zset
- :mod:`.delivery`: one attempt and its bookkeeping, :func:`redeliver`, counters
"""

from __future__ import annotations

from workers.webhooks.delivery import (
    Delivery,
    RedeliverError,
    WebhookSender,
    dead_letters,
    delivery_stats,
    redeliver,
)
from workers.webhooks.schedule import CallbackSchedule
from workers.webhooks.signing import event_id, generate_secret, signing_secrets
from workers.webhooks.ssrf import UnsafeCallbackURL, check_callback_url, is_public
from workers.webhooks.transport import build_client, shared_client

__all__ = [
    "CallbackSchedule",
    "Delivery",
    "RedeliverError",
    "UnsafeCallbackURL",
    "WebhookSender",
    "build_client",
    "check_callback_url",
    "dead_letters",
    "delivery_stats",
    "event_id",
    "generate_secret",
    "is_public",
    "redeliver",
    "shared_client",
    "signing_secrets",
]
