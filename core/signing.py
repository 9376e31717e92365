"""Standard Webhooks signing: the secret, the stable event id and the signature headers.

The signed content is ``{webhook-id}.{webhook-timestamp}.{body}``, signed as ``v1,`` +
base64 HMAC-SHA256 by the ``standardwebhooks`` library. During a secret rotation
(``COURIER_WEBHOOK_SECRET_PREVIOUS``) every event carries one signature per secret,
space-separated, so receivers holding either secret verify it.
"""

from __future__ import annotations

import base64
import secrets
import time
from collections.abc import Sequence
from datetime import UTC, datetime

import redis
from standardwebhooks import Webhook

from core import keys

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32
USER_AGENT = "Courier-Webhooks/1.0 (Standard Webhooks)"


def generate_secret() -> str:
    """A fresh signing secret: ``whsec_`` + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def shared_secret(client: redis.Redis) -> str:
    """The secret generated once for the whole cluster: the first process to ask stores
    it (SET NX), every other process reads that one."""
    client.set(keys.WEBHOOK_SECRET, generate_secret(), nx=True)
    stored = client.get(keys.WEBHOOK_SECRET)
    if isinstance(stored, bytes):
        stored = stored.decode()
    if not stored:
        raise RuntimeError("the webhook secret could not be read back from Redis")
    return str(stored)


def signing_secrets(configured: str | None, previous: str | None, client: redis.Redis) -> list[str]:
    """The secrets to sign with: the current one (configured, else the shared generated
    one), then the previous one while a rotation is under way."""
    current = configured or shared_secret(client)
    out = [current]
    if previous and previous != current:
        out.append(previous)
    for secret in out:
        Webhook(secret)  # refuses an empty or malformed secret early, with its own error
    return out


def event_id(job_id: str, status: str) -> str:
    """``webhook-id``: one per event (a job ends once), the same on every retry and
    redelivery, so receivers can drop duplicates."""
    return f"msg_{job_id}_{status}"


def sign(secrets_: Sequence[str], msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header: one ``v1,<base64>`` per secret, space-separated."""
    when = datetime.fromtimestamp(timestamp, tz=UTC)  # the library mis-signs non-UTC times
    text = body.decode("utf-8")
    return " ".join(Webhook(s).sign(msg_id, when, text) for s in secrets_)


def signed_headers(
    secrets_: Sequence[str], msg_id: str, body: bytes, timestamp: int | None = None
) -> dict[str, str]:
    """Every header of one delivery attempt, freshly timestamped and signed."""
    ts = int(time.time()) if timestamp is None else timestamp
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": sign(secrets_, msg_id, ts, body),
        "content-type": "application/json",
        "user-agent": USER_AGENT,
    }
