"""Fixes for kombu's Redis transport as a gevent worker uses it.

1. An ack that fails must not leak a consumer slot.

kombu's ``redis.QoS.ack`` removes the message from Redis' unacked index *before* it
forgets the delivery locally; when Redis is down at that moment the removal raises
and the local forget never happens. Each such ack leaks one prefetch slot, and once
``concurrency`` acks failed (a Redis restart with that many jobs in flight) the worker
stays connected but never consumes again (the celery#8030/#9191 family, still seen
with kombu 5.7). Here the local forget always happens; a message whose Redis-side ack
failed stays in the unacked index and comes back after the visibility timeout, where
the job's one-way status makes the second delivery a no-op.

2. Messages of a dead worker must come back. kombu restores unacked messages older than
the visibility timeout only from an empty poll, and a green (gevent) worker's polls are
never empty while it waits on BRPOP — so a worker killed after taking a message but
before claiming its job left that job queued with no message, for good.
:func:`restore_unacked` runs kombu's own restore from the sweeper instead.

3. One Redis client per channel. kombu builds a new ``redis.Redis`` object for every ack
and every event it publishes (a share of a busy worker's CPU); the client is reused here while
the channel's connection pool stays the same.

4. A freed slot must be refilled at once. With every slot busy the consumer sends no
BRPOP and Celery's green loop then sleeps in ``poll(timeout=2.0)``; nothing wakes it
when a task ends, so a freed slot stayed idle until that poll timed out (README, Worker
model). While the worker cannot take a message, polls are capped at ``SATURATED_POLL_S`` so
the slot is refilled within that time.

5. Acks in batches. kombu sends each ack to Redis (ZREM + HDEL) at once: a round trip per job,
a share of a busy worker's CPU. Here an ack frees its prefetch slot at once and reaches Redis
within ``ACK_FLUSH_S``, many acks per round trip. An ack still unsent when the worker dies
is a message redelivered after the visibility timeout, as with one lost in flight: the job's
one-way status makes that delivery a no-op.

6. No message while the call pool is full: a gevent worker runs calls in its own pool, not
in Celery's tasks (``workers.run.pool``), so the consumer asks that pool too.

7. Remote control dies quietly with the connection. Celery's gevent remote-control loop
(``gPidbox.loop``) lets the broker's ConnectionError escape its greenlet, and gevent prints
three chained tracebacks; the consumer's restart starts a new loop anyway. Here the loop
reports the outage (``workers.outage``) and ends.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from typing import Any

import redis
from celery.worker import pidbox
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual

from workers.outage import broker_outage
from workers.run import pool as execution

log = logging.getLogger("courier.broker")

# Acks are sent to Redis in batches this often (see 5. above).
ACK_FLUSH_S = 0.02


class ResilientQoS(kombu_redis.QoS):  # type: ignore[misc]
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._acks: list[Any] = []
        self._acks_lock = threading.Lock()
        self._ack_flusher: threading.Thread | None = None

    def can_consume(self) -> bool:
        """Also no message while the process's call pool is full (``workers.run.pool``)."""
        return execution.has_room() and bool(super().can_consume())

    def ack(self, delivery_tag: Any) -> None:
        with self._acks_lock:
            self._acks.append(delivery_tag)
        if self._ack_flusher is None or not self._ack_flusher.is_alive():
            self._ack_flusher = threading.Thread(
                target=_flush_acks_while_open, args=(weakref.ref(self),), daemon=True
            )
            self._ack_flusher.start()
        virtual.QoS.ack(self, delivery_tag)

    def flush_acks(self) -> None:
        """Record the acks made since the last flush in Redis: one round trip for all."""
        with self._acks_lock:
            tags, self._acks = self._acks, []
        if not tags:
            return
        try:
            with self.pipe_or_acquire() as pipe:
                pipe.zrem(self.unacked_index_key, *tags).hdel(self.unacked_key, *tags).execute()
        except Exception as exc:
            broker_outage().lost("acks", exc)
            log.debug(
                "%d acks not recorded in Redis (%s); they will be redelivered", len(tags), exc
            )

    def restore_unacked_once(self, stderr: Any = None) -> Any:
        self.flush_acks()
        return super().restore_unacked_once(stderr)

    def reject(self, delivery_tag: Any, requeue: bool = False) -> None:
        try:
            if requeue:
                self.restore_by_tag(delivery_tag, leftmost=True)
            else:
                self._remove_from_indices(delivery_tag).execute()
        except Exception as exc:
            log.warning("reject of %s not recorded in Redis (%s)", delivery_tag, exc)
        virtual.QoS.ack(self, delivery_tag)


def _flush_acks_while_open(qos_ref: weakref.ref[ResilientQoS]) -> None:
    while True:
        time.sleep(ACK_FLUSH_S)
        qos = qos_ref()
        if qos is None:
            return
        qos.flush_acks()
        if qos.channel.closed:
            return
        del qos


SATURATED_POLL_S = 0.01
_original_get = kombu_redis.MultiChannelPoller.get


def _get_refilling_promptly(
    self: kombu_redis.MultiChannelPoller, callback: Any, timeout: float | None = None
) -> Any:
    if timeout is None or timeout > SATURATED_POLL_S:
        saturated = any(
            channel.active_queues and not channel.qos.can_consume() for channel in self._channels
        )
        if saturated:
            timeout = SATURATED_POLL_S
    return _original_get(self, callback, timeout)


_original_create_client = kombu_redis.Channel._create_client


def _reused_client(self: kombu_redis.Channel, asynchronous: bool = False) -> Any:
    if asynchronous:
        return _original_create_client(self, asynchronous=True)
    pool = self.pool
    client = self.__dict__.get("_courier_client")
    if client is None or client.connection_pool is not pool:
        client = _original_create_client(self)
        self.__dict__["_courier_client"] = client
    return client


_original_pidbox_loop = pidbox.gPidbox.loop


def _pidbox_loop_quietly(self: pidbox.gPidbox, c: Any) -> None:
    try:
        _original_pidbox_loop(self, c)
    except (*c.connection_errors, redis.ConnectionError, OSError) as exc:
        broker_outage().lost("remote control", exc)
        log.debug("remote-control loop ended: %r (the consumer restarts it)", exc)


def install() -> None:
    """Make every kombu Redis channel in this process use these fixes."""
    kombu_redis.Channel.QoS = ResilientQoS
    kombu_redis.Channel._create_client = _reused_client  # type: ignore[method-assign]
    kombu_redis.MultiChannelPoller.get = _get_refilling_promptly  # type: ignore[method-assign]
    pidbox.gPidbox.loop = _pidbox_loop_quietly  # type: ignore[method-assign]


def restore_unacked(app: Any) -> None:
    """Put back on their queues the messages delivered longer than the visibility timeout
    ago and never acknowledged (kombu's own restore, run on the sweeper's schedule)."""
    with app.connection_for_write() as connection:
        channel = connection.default_channel
        qos = getattr(channel, "qos", None)
        if isinstance(qos, kombu_redis.QoS):
            qos.restore_visible(num=None, interval=1)
