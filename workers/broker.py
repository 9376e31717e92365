"""A fix for kombu's Redis transport: an ack that fails must not leak a consumer slot.

kombu's ``redis.QoS.ack`` removes the message from Redis' unacked index *before* it
forgets the delivery locally; when Redis is down at that moment the removal raises
and the local forget never happens. Each such ack leaks one prefetch slot, and once
``concurrency`` acks failed (a Redis restart with that many jobs in flight) the worker
stays connected but never consumes again (the celery#8030/#9191 family, still seen
with kombu 5.7). Here the local forget always happens; a message whose Redis-side ack
failed stays in the unacked index and comes back after the visibility timeout, where
the job's one-way status makes the second delivery a no-op.
"""

from __future__ import annotations

import logging
from typing import Any

from kombu.transport import redis as kombu_redis
from kombu.transport import virtual

log = logging.getLogger("courier.broker")


class ResilientQoS(kombu_redis.QoS):  # type: ignore[misc]
    def ack(self, delivery_tag: Any) -> None:
        try:
            self._remove_from_indices(delivery_tag).execute()
        except Exception as exc:
            log.warning(
                "ack of %s not recorded in Redis (%s); it will be redelivered", delivery_tag, exc
            )
        virtual.QoS.ack(self, delivery_tag)

    def reject(self, delivery_tag: Any, requeue: bool = False) -> None:
        try:
            if requeue:
                self.restore_by_tag(delivery_tag, leftmost=True)
            else:
                self._remove_from_indices(delivery_tag).execute()
        except Exception as exc:
            log.warning("reject of %s not recorded in Redis (%s)", delivery_tag, exc)
        virtual.QoS.ack(self, delivery_tag)


def install() -> None:
    """Make every kombu Redis channel in this process use :class:`ResilientQoS`."""
    kombu_redis.Channel.QoS = ResilientQoS
