"""Per-process resources of a worker, built once and shared by every task it runs.

Built lazily on first use (or in Celery's ``worker_process_init``): the Redis pool
sized to the concurrency, the job store, the leases this process holds, and the
background loops that renew those leases and sweep the shared schedules.
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass, field

import redis

from config.settings import Settings, get_settings
from core.connections import store_client
from core.store import JobStore

# A worker's job-store pool: its commands are short (no blocking ones), so a greenlet that
# finds every connection busy waits a moment. Sized to the concurrency instead, a burst of
# jobs opened hundreds of connections (each with its own read buffer), and a handful of such
# workers would reach Redis' default client limit (figures: README, Worker model).
STORE_POOL_MAX = 128


@dataclass
class Leases:
    """The jobs this process is running: job id → lease token."""

    held: dict[str, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def new_token(self) -> str:
        return uuid.uuid4().hex

    def add(self, job_id: str, token: str) -> None:
        with self.lock:
            self.held[job_id] = token

    def remove(self, job_id: str) -> None:
        with self.lock:
            self.held.pop(job_id, None)

    def snapshot(self) -> dict[str, str]:
        with self.lock:
            return dict(self.held)


@dataclass
class Runtime:
    settings: Settings
    redis: redis.Redis
    store: JobStore
    leases: Leases = field(default_factory=Leases)
    identity: str = field(default_factory=lambda: uuid.uuid4().hex[:12])


_runtime: Runtime | None = None
_runtime_lock = threading.Lock()


def get_runtime() -> Runtime:
    global _runtime
    if _runtime is None:
        with _runtime_lock:
            if _runtime is None:
                settings = get_settings()
                pool_size = min(settings.worker_concurrency + 50, STORE_POOL_MAX)
                client = store_client(settings, pool_size)
                _runtime = Runtime(settings, client, JobStore.from_settings(client, settings))
    return _runtime


def reset_runtime() -> None:
    """Forget the process's runtime (after fork, or between tests)."""
    global _runtime
    _runtime = None
