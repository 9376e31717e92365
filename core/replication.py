"""Acknowledge a write only once the replicas hold it (README, High availability).

Redis replicates asynchronously: a master that dies takes with it whatever its replicas had
not received yet, and Sentinel promotes one of those replicas. ``WAIT numreplicas timeout``
blocks the calling connection until that many replicas hold every write the connection has
made, so :meth:`Replication.confirm` makes one write of its own (the ``CONFIRM`` script: it
checks that the jobs are on this master as expected and marks them ``enqueued``) and WAITs
on the same connection, in one round trip. Redis replicates one ordered stream, so that write
comes after every write finished before it, on any connection (the broker's message too).

It waits for *every* replica in sync with the master, and at least ``replicas`` of them:
Sentinel promotes the replica with the highest replication offset it has seen, but it learns
the offsets from INFO polls up to a second old, so with one replica of two confirmed it may
promote the other.

What is promised: a confirmed write is on every replica that was in sync with the master, so a
failover to any of them keeps it. What is not: WAIT does not make replication synchronous. A
write not confirmed in time may be on the master alone and is lost if the master dies before
a replica catches up; a replica out of sync at that moment (disconnected, still loading) does
not count, and Sentinel could still promote it.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Sequence

import redis
from redis.exceptions import NoScriptError

from core import keys, scripts

RECOUNT_S = 1.0  # how often the replicas in sync are counted (INFO replication)


class Replicated(enum.Enum):
    CONFIRMED = "confirmed"  # on every replica in sync, and enough of them (or none asked for)
    LAGGING = "lagging"  # on this master, but not yet on enough replicas
    MISSING = "missing"  # not on this master as expected: lost in a failover, or changed


class Replication:
    """Confirms job writes on every replica in sync, and at least ``replicas`` of them,
    within ``timeout_s`` (``replicas`` 0: no check)."""

    def __init__(self, client: redis.Redis, replicas: int = 0, timeout_s: float = 1.0) -> None:
        self.client = client
        self.replicas = replicas
        self.timeout_ms = max(1, int(timeout_s * 1000))
        self._confirm = client.register_script(scripts.CONFIRM)
        self._in_sync = 0
        self._recount_at = 0.0

    @property
    def enabled(self) -> bool:
        return self.replicas > 0

    def confirm(self, job_ids: Sequence[str], status: str = "") -> Replicated:
        """Whether every job (in ``status``, if given) is on enough replicas. Redis errors
        (the master unreachable, or demoted) propagate."""
        if not self.enabled or not job_ids:
            return Replicated.CONFIRMED
        needed = self._needed()
        missing, acknowledged = self._mark_and_wait(job_ids, status, needed)
        if missing:
            return Replicated.MISSING
        if acknowledged < needed:  # a replica gone since the last count need not be waited for
            needed = self._needed(recount=True)
        return Replicated.CONFIRMED if acknowledged >= needed else Replicated.LAGGING

    def _needed(self, recount: bool = False) -> int:
        if recount or time.monotonic() >= self._recount_at:
            try:
                self._in_sync = replicas_in_sync(self.client)
            except redis.ResponseError:  # INFO refused (some managed Redis): the minimum only
                self._in_sync = 0
            self._recount_at = time.monotonic() + RECOUNT_S
        return max(self.replicas, self._in_sync)

    def _mark_and_wait(self, job_ids: Sequence[str], status: str, needed: int) -> tuple[int, int]:
        script_keys = [keys.job(j) for j in job_ids]
        for _ in range(2):
            # EVALSHA itself, not the Script through the pipeline: redis-py would send a
            # SCRIPT EXISTS first, a round trip more per check.
            pipe = self.client.pipeline(transaction=False)
            pipe.evalsha(self._confirm.sha, len(script_keys), *script_keys, status)
            pipe.execute_command("WAIT", needed, self.timeout_ms)
            missing, acknowledged = pipe.execute(raise_on_error=False)
            if isinstance(missing, NoScriptError):  # a new master (a failover) or a restart
                self._confirm.sha = self.client.script_load(scripts.CONFIRM)
                continue
            for answer in (missing, acknowledged):
                if isinstance(answer, Exception):
                    raise answer
            return int(missing), int(acknowledged)
        raise NoScriptError("the confirmation script could not be loaded")


def replicas_in_sync(client: redis.Redis) -> int:
    """Replicas connected to the master and streaming from it (``INFO replication``)."""
    info = client.info("replication")
    return sum(
        1
        for name, value in info.items()
        if name.startswith("slave") and isinstance(value, dict) and value.get("state") == "online"
    )
