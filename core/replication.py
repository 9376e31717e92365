"""Acknowledge a write only once a replica holds it (README, High availability).

Redis replicates asynchronously: a master that dies takes with it whatever its replicas had
not received yet, and Sentinel promotes one of those replicas. ``WAIT numreplicas timeout``
blocks the calling connection until that many replicas hold every write the connection has
made, so :meth:`Replication.confirm` makes one write of its own (the ``CONFIRM`` script, which
first checks that the jobs are on this master as expected) and WAITs on the same connection,
in one round trip. Redis replicates one ordered stream, so that write comes after every write
finished before it, on any connection (the broker's message included).

What is promised: a job confirmed here is on ``replicas`` replicas as well as the master, so
a failover to one of them keeps it. What is not: WAIT does not make Redis' replication
synchronous. A write that is not confirmed in time may still be on the master alone, and is
lost if the master dies before a replica catches up; Sentinel may also promote a replica that
lagged behind the one that confirmed.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

import redis

from core import keys, scripts


class Replicated(enum.Enum):
    CONFIRMED = "confirmed"  # on enough replicas (or none are asked for)
    LAGGING = "lagging"  # on this master, but not yet on enough replicas
    MISSING = "missing"  # not on this master as expected: lost in a failover, or changed


class Replication:
    """Confirms job writes on ``replicas`` replicas within ``timeout_s`` (0: no check)."""

    def __init__(self, client: redis.Redis, replicas: int = 0, timeout_s: float = 1.0) -> None:
        self.client = client
        self.replicas = replicas
        self.timeout_ms = max(1, int(timeout_s * 1000))
        self._confirm = client.register_script(scripts.CONFIRM)

    @property
    def enabled(self) -> bool:
        return self.replicas > 0

    def confirm(self, job_ids: Sequence[str], status: str = "") -> Replicated:
        """Whether every job (in ``status``, if given) is on enough replicas. Redis errors
        (the master unreachable, or demoted) propagate."""
        if not self.enabled or not job_ids:
            return Replicated.CONFIRMED
        pipe = self.client.pipeline(transaction=False)
        self._confirm(
            keys=[keys.REPLICATION_MARK, *(keys.job(j) for j in job_ids)],
            args=[status],
            client=pipe,
        )
        pipe.execute_command("WAIT", self.replicas, self.timeout_ms)
        missing, acknowledged = pipe.execute()
        if int(missing):
            return Replicated.MISSING
        return Replicated.CONFIRMED if int(acknowledged) >= self.replicas else Replicated.LAGGING


def replicas_in_sync(client: redis.Redis) -> int:
    """Replicas connected to the master and streaming from it (``INFO replication``)."""
    info = client.info("replication")
    return sum(
        1
        for name, value in info.items()
        if name.startswith("slave") and isinstance(value, dict) and value.get("state") == "online"
    )
