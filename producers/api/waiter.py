"""Long-poll support for ``GET /v1/jobs/{id}?wait=N``.

One Redis pub/sub subscription per API process listens on ``core.keys.JOB_EVENTS``
(the job store publishes a job's id there when the job ends) and resolves the asyncio
futures of the requests waiting on that id. A waiting request holds no thread and no
Redis connection. Each waiter registers its future *before* re-reading the record, so a
job that ends between the two is never missed; after a reconnect every waiter is woken
to re-read, since events sent while the subscription was down are lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub

from core import keys
from core.jobs import TERMINAL
from core.records import Record

log = logging.getLogger("courier.api.waiter")

ReadRecord = Callable[[], Awaitable[Record | None]]
KEEPALIVE_S = 15.0


class JobWaiter:
    """Dispatches job-ended events from one shared subscription to waiting requests."""

    def __init__(self, client: aioredis.Redis, channel: str = keys.JOB_EVENTS) -> None:
        self.client = client
        self.channel = channel
        self.subscribed = asyncio.Event()
        self._waiters: dict[str, set[asyncio.Future[None]]] = {}
        self._task: asyncio.Task[None] | None = None

    @property
    def waiting(self) -> int:
        return sum(len(futures) for futures in self._waiters.values())

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._listen(), name="courier-job-events")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(self._task, 5)
            self._task = None
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

    async def _listen(self) -> None:
        backoff = 0.1
        while True:
            pubsub = self.client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                self.subscribed.set()
                self._wake_all()  # events sent while we were not subscribed are lost
                backoff = 0.1
                await self._receive(pubsub)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("job events subscription lost (%s); resubscribing", exc)
            finally:
                self.subscribed.clear()
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)

    async def _receive(self, pubsub: PubSub) -> None:
        """Dispatch messages until the connection fails. ``get_message`` also returns None
        at once for confirmations and pongs, so a PING (which notices a dead connection)
        goes out only after ``KEEPALIVE_S`` of silence."""
        loop = asyncio.get_running_loop()
        heard = loop.time()
        while True:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=KEEPALIVE_S)
            now = loop.time()
            if message is None:
                if now - heard >= KEEPALIVE_S:
                    heard = now
                    await pubsub.ping()
                continue
            heard = now
            if message.get("type") == "message":
                data = message["data"]
                self._dispatch(data.decode() if isinstance(data, bytes) else str(data))
