"""One pub/sub connection an API process keeps open for as long as it runs.

The long-poll waiter (:mod:`.waiter`) and the live event hub (:mod:`.live`) each hold one:
subscribe, hand every message over, and when the connection fails reconnect with backoff
(0.1 s doubling to 5 s) and subscribe again — what was published meanwhile is lost, which
each subclass makes good in :meth:`connected`. ``get_message`` returns None at once for
confirmations and pongs as well, so a PING (which notices a dead connection) goes out only
after :data:`KEEPALIVE_S` of silence.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub

log = logging.getLogger("courier.api.listener")

KEEPALIVE_S = 15.0


class Listener:
    """Runs :meth:`connected`, then :meth:`handle` for each message, reconnecting forever."""

    name = "pub/sub"
    ignore_subscribe_messages = True

    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._listen(), name=f"courier-{self.name}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(self._task, 5)
            self._task = None

    async def connected(self, pubsub: PubSub) -> None:
        """Subscribe on a new connection (the first, or one after a failure)."""
        raise NotImplementedError

    def disconnected(self) -> None:
        """The connection failed or the listener stops."""

    def handle(self, message: dict[str, Any]) -> None:
        raise NotImplementedError

    async def _listen(self) -> None:
        backoff = 0.1
        while True:
            pubsub = self.client.pubsub(ignore_subscribe_messages=self.ignore_subscribe_messages)
            try:
                await self.connected(pubsub)
                backoff = 0.1
                await self._receive(pubsub)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("%s subscription lost (%s); resubscribing", self.name, exc)
            finally:
                self.disconnected()
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)

    async def _receive(self, pubsub: PubSub) -> None:
        """Hand messages over until the connection fails."""
        loop = asyncio.get_running_loop()
        heard = loop.time()
        while True:
            message = await pubsub.get_message(
                ignore_subscribe_messages=self.ignore_subscribe_messages, timeout=KEEPALIVE_S
            )
            now = loop.time()
            if message is None:
                if now - heard >= KEEPALIVE_S:
                    heard = now
                    await pubsub.ping()
                continue
            heard = now
            self.handle(message)


def text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
