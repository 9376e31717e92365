"""Long-poll support for ``GET /v1/jobs/{id}?wait=N``.

One Redis pub/sub subscription per API process listens on ``core.keys.JOB_EVENTS``
(the job store publishes a job's id there when the job ends) and resolves the asyncio
futures of the requests waiting on that id. A waiting request holds no thread and no
Redis connection. Each waiter registers its future *before* re-reading the record, so a
job that ends between the two is never missed; after a reconnect every waiter is woken
to re-read, since events sent while the subscription was down are lost (the connection
itself is kept by :class:`.listener.Listener`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub

from core import keys
from core.jobs import TERMINAL
from core.records import Record
from producers.api.listener import Listener, text

ReadRecord = Callable[[], Awaitable[Record | None]]


class JobWaiter(Listener):
    """Dispatches job-ended events from one shared subscription to waiting requests."""

    name = "job-events"

    def __init__(self, client: aioredis.Redis, channel: str = keys.JOB_EVENTS) -> None:
        super().__init__(client)
        self.channel = channel
        self.subscribed = asyncio.Event()
        self._waiters: dict[str, set[asyncio.Future[None]]] = {}

    @property
    def waiting(self) -> int:
        return sum(len(futures) for futures in self._waiters.values())

    async def stop(self) -> None:
        await super().stop()
        self._wake_all()

    async def wait(self, job_id: str, timeout: float, read: ReadRecord) -> Record | None:
        """The record once the job has ended, or as it stands after ``timeout`` seconds
        (None if there is no such job)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            future: asyncio.Future[None] = loop.create_future()
            self._waiters.setdefault(job_id, set()).add(future)
            try:
                record = await read()
                remaining = deadline - loop.time()
                if record is None or record.get("status") in TERMINAL or remaining <= 0:
                    return record
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(future, remaining)
            finally:
                self._forget(job_id, future)

    def _forget(self, job_id: str, future: asyncio.Future[None]) -> None:
        futures = self._waiters.get(job_id)
        if futures is not None:
            futures.discard(future)
            if not futures:
                del self._waiters[job_id]

    def _dispatch(self, job_id: str) -> None:
        for future in self._waiters.pop(job_id, ()):
            if not future.done():
                future.set_result(None)

    def _wake_all(self) -> None:
        for job_id in list(self._waiters):
            self._dispatch(job_id)

    async def connected(self, pubsub: PubSub) -> None:
        await pubsub.subscribe(self.channel)
        self.subscribed.set()
        self._wake_all()  # events sent while we were not subscribed are lost

    def disconnected(self) -> None:
        self.subscribed.clear()

    def handle(self, message: dict[str, Any]) -> None:
        if message.get("type") == "message":
            self._dispatch(text(message["data"]))
