"""Live job events for ``GET /v1/jobs/{id}/events``: one pub/sub connection per API process.

The Lua scripts that add an event to a job's stream also publish it on the job's channel
(:mod:`core.events`). The :class:`EventHub` subscribes that channel while at least one
reader of the job is open here, and appends each message to every such reader's
:class:`Reader` queue: thousands of open streams share one Redis connection and hold no
thread. A reader subscribes (confirmed by Redis) *before* it reads the stored events, so an
event added meanwhile is in what it reads or in its queue, maybe both (ids tell). After a
reconnect, or when a slow reader's queue overflows, the reader re-reads the stored events
from its last id (``resync``): live messages lost meanwhile are found there.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub

from core import keys
from core.events import JobEvent, from_live
from producers.api.listener import KEEPALIVE_S, Listener, text

__all__ = ["KEEPALIVE_S", "EventHub", "Reader"]

SUBSCRIBE_TIMEOUT_S = 5.0
MAX_QUEUED = 1000  # events queued for one reader; past that it re-reads the stream instead
HUB_CHANNEL = keys.PREFIX + "live:hub"  # subscribed first, so the connection exists


class Reader:
    """One open event stream's queue of live events."""

    __slots__ = ("channel", "queue", "resync", "wake")

    def __init__(self, channel: str) -> None:
        self.channel = channel
        self.queue: deque[JobEvent] = deque()
        self.resync = False  # live events may have been lost: read the stream again
        self.wake = asyncio.Event()

    def push(self, event: JobEvent) -> None:
        if len(self.queue) >= MAX_QUEUED:
            self.queue.clear()
            self.resync = True
        else:
            self.queue.append(event)
        self.wake.set()

    def lost_some(self) -> None:
        self.queue.clear()
        self.resync = True
        self.wake.set()


class EventHub(Listener):
    """The process's one subscription to the live channels of the jobs being read."""

    name = "live-events"
    ignore_subscribe_messages = False  # a channel's confirmation is awaited

    def __init__(self, client: aioredis.Redis) -> None:
        super().__init__(client)
        self._readers: dict[str, set[Reader]] = {}
        self._subscribed: dict[str, asyncio.Future[None]] = {}  # channel → confirmed
        self._pubsub: PubSub | None = None
        self._ready = asyncio.Event()
        self._lock = asyncio.Lock()  # (un)subscribe commands go out in order

    @property
    def open_streams(self) -> int:
        return sum(len(readers) for readers in self._readers.values())

    async def subscribe(self, job_id: str) -> Reader:
        """A reader of the job's live events, once Redis has confirmed the subscription;
        TimeoutError if it does not within :data:`SUBSCRIBE_TIMEOUT_S`."""
        channel = keys.job_live(job_id)
        reader = Reader(channel)
        self._readers.setdefault(channel, set()).add(reader)
        try:
            async with asyncio.timeout(SUBSCRIBE_TIMEOUT_S):
                await self._ready.wait()
                async with self._lock:
                    confirmed = self._subscribed.get(channel)
                    if confirmed is None and self._pubsub is not None:
                        confirmed = asyncio.get_running_loop().create_future()
                        self._subscribed[channel] = confirmed
                        await self._pubsub.subscribe(channel)
                if confirmed is not None:
                    await asyncio.shield(confirmed)
        except BaseException:
            self.unsubscribe(reader)
            raise
        return reader

    def unsubscribe(self, reader: Reader) -> None:
        readers = self._readers.get(reader.channel)
        if readers is None:
            return
        readers.discard(reader)
        if not readers:
            del self._readers[reader.channel]
            asyncio.get_running_loop().create_task(self._drop(reader.channel))

    async def _drop(self, channel: str) -> None:
        async with self._lock:
            if channel in self._readers or channel not in self._subscribed:
                return  # read again meanwhile, or never subscribed
            del self._subscribed[channel]
            if self._pubsub is not None:
                with contextlib.suppress(Exception):
                    await self._pubsub.unsubscribe(channel)

    async def connected(self, pubsub: PubSub) -> None:
        await pubsub.subscribe(HUB_CHANNEL)
        async with self._lock:
            self._pubsub = pubsub
            loop = asyncio.get_running_loop()
            for old in self._subscribed.values():  # their readers resync below
                if not old.done():
                    old.set_result(None)
            self._subscribed = {ch: loop.create_future() for ch in self._readers}
            if self._subscribed:
                await pubsub.subscribe(*self._subscribed)
        self._ready.set()
        for readers in list(self._readers.values()):
            for reader in readers:
                reader.lost_some()  # events sent while we were not subscribed

    def disconnected(self) -> None:
        self._ready.clear()
        self._pubsub = None

    def handle(self, message: dict[str, Any]) -> None:
        kind, channel = message.get("type"), text(message.get("channel"))
        if kind == "message":
            readers = self._readers.get(channel)
            if readers:
                event = from_live(message["data"])
                for reader in readers:
                    reader.push(event)
        elif kind == "subscribe":
            confirmed = self._subscribed.get(channel)
            if confirmed is not None and not confirmed.done():
                confirmed.set_result(None)
