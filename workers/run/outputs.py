"""Streamed output on its way to the job's events (``output.delta``, ``output.reset``).

A streamed call hands each piece of text to its :class:`OutputSink`, which only appends it
to a buffer. Every ``interval_s`` the process's :class:`OutputPublisher` writes the text
gathered by every sink in one pipeline (one ``EMIT_OUTPUT`` script per sink with news):
a delta per job per interval at most, so a call streaming hundreds of tokens a second
costs tens of Redis operations, and a thousand calls in flight cost one round trip per
interval. A sink's last text is written by the call itself when it ends (:meth:`close`),
before the job's ending, so deltas always come before the terminal event. Writes happen
under one lock, so a job's deltas keep their order.

A job whose lease is gone (cancelled, taken over) takes no more output: its sink goes
quiet. A Redis error keeps the text in the sink for the next round.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import redis

from core import events
from core.errors import CourierError
from core.event_writer import EventWriter
from core.results import ProviderResult
from workers.providers.base import Provider

log = logging.getLogger("courier.outputs")

MAX_RESET_REASON = 200


@dataclass(eq=False)
class OutputSink:
    """The output of one provider call (one attempt) of a job."""

    publisher: OutputPublisher
    job_id: str
    token: str
    attempt: int
    model: str
    parts: list[str] = field(default_factory=list)
    published: bool = False  # some of this attempt's text is in the job's events
    lost: bool = False  # the lease is gone: write nothing more

    def write(self, text: str) -> None:
        if self.lost or not text:
            return
        if not self.parts:
            self.publisher.mark(self)
        self.parts.append(text)

    def take(self) -> str:
        text = "".join(self.parts)
        self.parts.clear()
        return text

    def call(
        self, provider: Provider, model_name: str, request: Mapping[str, Any], timeout: float
    ) -> ProviderResult:
        """The provider call in streaming mode, its text into this sink; on a fault what it
        published is voided (a retry or the fallback starts over)."""
        try:
            result = provider.stream_complete(
                model_name,
                request,
                timeout=timeout,
                chunk_timeout=self.publisher.chunk_timeout_s,
                on_text=self.write,
            )
        except CourierError as exc:
            self.void(f"{exc.error_type}: {exc.message}")
            raise
        self.close()
        return result

    def close(self) -> None:
        """The call succeeded: write what is still buffered, now."""
        self.publisher.write_now(self, None)

    def void(self, reason: str) -> None:
        """The call failed: what it published is void (``output.reset``), the rest dropped."""
        self.publisher.write_now(self, reason[:MAX_RESET_REASON])


class OutputPublisher:
    """Per process: gathers the sinks with news and writes them every ``interval_s``; and
    tells a job's events the model of a call its claim did not announce."""

    def __init__(self, writer: EventWriter, interval_s: float, chunk_timeout_s: float) -> None:
        self.writer = writer
        self.interval_s = interval_s
        self.chunk_timeout_s = chunk_timeout_s
        self._dirty: list[OutputSink] = []
        self._lock = threading.Lock()  # a greenlet-aware lock under gevent
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def announce_model(self, job_id: str, token: str, model: str) -> None:
        self.writer.announce_model(job_id, token, model)

    def open(self, job_id: str, token: str, attempt: int, model: str) -> OutputSink:
        if self._thread is None:
            self.start()
        return OutputSink(self, job_id, token, attempt, model)

    def mark(self, sink: OutputSink) -> None:
        self._dirty.append(sink)

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="courier-outputs", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.flush()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.flush()
            except Exception:
                log.exception("output flush failed")

    def flush(self) -> None:
        """Write every sink's buffered text, one pipeline for all."""
        with self._lock:
            dirty, self._dirty = self._dirty, []
            batch = [(sink, sink.take()) for sink in dirty if not sink.lost]
            batch = [(sink, text) for sink, text in batch if text]
            if not batch:
                return
            pipe = self.writer.redis.pipeline(transaction=False)
            for sink, text in batch:
                self.writer.emit_output(
                    sink.job_id,
                    sink.token,
                    [(events.DELTA, sink.attempt, sink.model, text)],
                    client=pipe,
                )
            try:
                answers = pipe.execute(raise_on_error=False)
            except redis.RedisError as exc:
                log.warning("output of %d job(s) not written yet: %s", len(batch), exc)
                answers = [exc] * len(batch)
            for (sink, text), answer in zip(batch, answers, strict=True):
                self._settle(sink, text, answer)

    def _settle(self, sink: OutputSink, text: str, answer: object) -> None:
        if isinstance(answer, Exception):  # kept for the next round, in front
            sink.parts.insert(0, text)
            if len(sink.parts) == 1:
                self._dirty.append(sink)
        elif answer == 0:
            sink.lost = True
        else:
            sink.published = True

    def write_now(self, sink: OutputSink, reset_reason: str | None) -> None:
        """A call's ending: its remaining text (``reset_reason`` None), or an
        ``output.reset`` when it had published any (the rest is dropped)."""
        with self._lock:
            text = sink.take()
            if sink.lost:
                return
            if reset_reason is None:
                out = [(events.DELTA, sink.attempt, sink.model, text)] if text else []
            elif sink.published:
                out = [(events.RESET, sink.attempt, reset_reason, "")]
            else:
                out = []
            if out and self.writer.emit_output(sink.job_id, sink.token, out) == 0:
                sink.lost = True
            sink.lost = sink.lost or reset_reason is not None
