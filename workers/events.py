"""Task events sent in batches by gevent (and thread) pool workers too.

With task events on (``COURIER_TASK_EVENTS``, for Flower), Celery publishes three events per
task: received, started, succeeded. A prefork worker buffers them and publishes one
``task.multi`` message per batch; the gevent and thread pools publish each one at once (Celery's
own comment: "This excludes eventlet/gevent, which should actually buffer"): a message per
event, a large share of a busy gevent worker's CPU (README, Worker model). This consumer step
turns on the same buffering for the pools that lack it and flushes the buffer every
:data:`FLUSH_INTERVAL_S`, so Flower sees a task's events at most that much later. Flower
(Celery's ``EventReceiver``) reads batched events as it reads single ones.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from celery import bootsteps

from workers.outage import broker_outage

log = logging.getLogger("courier.events")

FLUSH_INTERVAL_S = 0.25
BUFFER_LIMIT = 100


class BufferedTaskEvents(bootsteps.StartStopStep):  # type: ignore[misc]
    requires = ("celery.worker.consumer.events:Events",)

    def __init__(self, consumer: Any, **kwargs: Any) -> None:
        super().__init__(consumer, **kwargs)
        self._stopped = threading.Event()
        self._flusher: threading.Thread | None = None

    def start(self, consumer: Any) -> None:
        dispatcher = consumer.event_dispatcher
        if consumer.hub is not None or dispatcher is None or not dispatcher.enabled:
            return  # prefork buffers already; no events, nothing to do
        dispatcher.buffer_group = frozenset({"task"})
        dispatcher.buffer_limit = BUFFER_LIMIT
        if self._flusher is None or not self._flusher.is_alive():
            self._stopped.clear()
            self._flusher = threading.Thread(
                target=self._flush_loop, args=(consumer,), name="courier-events", daemon=True
            )
            self._flusher.start()

    def stop(self, consumer: Any) -> None:
        self._stopped.set()
        self._flush(consumer)

    def _flush_loop(self, consumer: Any) -> None:
        while not self._stopped.wait(FLUSH_INTERVAL_S):
            self._flush(consumer)

    @staticmethod
    def _flush(consumer: Any) -> None:
        dispatcher = consumer.event_dispatcher  # a new one after each reconnect
        if dispatcher is None:
            return
        try:
            dispatcher.flush(errors=False, groups=True)
        except Exception as exc:  # the broker is down: the events stay buffered
            broker_outage().lost("task events", exc)
            log.debug("task events not sent yet: %s", exc)
