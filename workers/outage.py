"""One log line when a worker process loses Redis (or the broker), one when it is back.

A Redis restart used to print, in each worker process: a three-exception traceback from
Celery's remote-control greenlet, Celery's own "connection lost", "cannot connect" and
"connected" lines, a warning from each of Courier's loops every second, and one INFO line
per job that ended while Redis was away ("lease no longer ours"). Every loop now reports
here instead: the first failure logs ``Redis unreachable (<where>: <error>) …``, the first
success after it ``Redis reachable again after N s``; the details stay at DEBUG.

A pooled connection opened before the outage may still fail once after Redis is back;
a failure within :data:`RELAPSE_S` of the recovery is taken as the tail of the same
outage and logged at DEBUG only.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger("courier.outage")

RELAPSE_S = 3.0


def brief(exc: object) -> str:
    text = f"{type(exc).__name__}: {exc}" if isinstance(exc, BaseException) else str(exc)
    return text if len(text) <= 200 else text[:197] + "..."


class Outage:
    """Whether this process can reach one service, and the two lines that say so."""

    def __init__(self, name: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self.clock = clock
        self._lock = threading.Lock()
        self._down_since: float | None = None
        self._lost_at = 0.0  # when the outage that was logged began
        self._back_at = float("-inf")
        self._quiet = False  # this loss is the tail of the last one: nothing to log

    @property
    def down(self) -> bool:
        return self._down_since is not None

    def lost(self, where: str, exc: object) -> None:
        """A call to the service failed for want of a connection."""
        with self._lock:
            first = self._down_since is None
            if first:
                now = self._down_since = self.clock()
                self._quiet = now - self._back_at < RELAPSE_S
                if not self._quiet:
                    self._lost_at = now
        if first and not self._quiet:
            log.warning(
                "%s unreachable (%s: %s); running provider calls go on, their outcomes, new "
                "jobs and webhooks wait for it; retrying",
                self.name,
                where,
                brief(exc),
            )
        else:
            log.debug("%s still unreachable (%s: %s)", self.name, where, brief(exc))

    def back(self) -> None:
        """A call to the service succeeded."""
        if self._down_since is None:  # the hot path: one attribute read
            return
        with self._lock:
            if self._down_since is None:
                return
            now = self._back_at = self.clock()
            self._down_since = None
            quiet = self._quiet
        if not quiet:
            log.warning("%s reachable again after %.1f s", self.name, now - self._lost_at)


redis_outage = Outage("Redis")
_broker_outage = Outage("the broker")


def broker_outage() -> Outage:
    """The broker's reporter: Redis' own when the broker is the job store's Redis."""
    from config.settings import get_settings

    settings = get_settings()
    return redis_outage if settings.celery_broker_url == settings.redis_url else _broker_outage


# ---- Celery's own connection lines --------------------------------------------------------

# Celery logs these on every broker reconnect; Courier's two lines say it once.
_LOST = ("consumer: Connection to broker lost", "consumer: Cannot connect to")
_RESTART = ("Skipping prefetch count reduction after connection restart",)
_CONNECTED = ("Connected to ", "pidbox: Connected to ")


class CeleryConnectionLines(logging.Filter):
    """Turns Celery's broker connection lines into the outage's two (the first "Connected
    to" of each logger at start-up still shows)."""

    def __init__(self) -> None:
        super().__init__()
        self._connected_once: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message.startswith(_LOST):
            cause = message.rsplit("(", 1)[-1].rstrip(")") if message.endswith(")") else ""
            broker_outage().lost("Celery's consumer", f"broker connection lost {cause}".strip())
            return False
        if message.startswith(_RESTART):
            return False
        if message.startswith(_CONNECTED):
            if record.name not in self._connected_once:
                self._connected_once.add(record.name)
                return True
            broker_outage().back()
            return False
        return True


CELERY_LOGGERS = (
    "celery.worker.consumer.consumer",
    "celery.worker.consumer.connection",
    "celery.worker.pidbox",
)


def install() -> None:
    """Filter Celery's connection lines in this (worker) process."""
    line_filter = CeleryConnectionLines()
    for name in CELERY_LOGGERS:
        logging.getLogger(name).addFilter(line_filter)
