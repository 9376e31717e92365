"""Job events a worker adds outside a status change (:mod:`core.events`): the model of a
call when the claim announced another, and the output of streamed calls. Both scripts
write only while the caller holds the job's lease."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis

from core import keys
from core.event_scripts import ANNOUNCE_MODEL, EMIT_OUTPUT


class EventWriter:
    """Takes a redis-py client with ``decode_responses=True``."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client
        self._announce_model = client.register_script(ANNOUNCE_MODEL)
        self._emit_output = client.register_script(EMIT_OUTPUT)

    def announce_model(self, job_id: str, token: str, model: str) -> bool:
        """Tell the job's events that the call now made goes to ``model`` (a fallback taken
        before the claimed attempt's call); False when the lease is lost."""
        return bool(self._announce_model(keys=[keys.job(job_id)], args=[token, model]))

    def emit_output(
        self,
        job_id: str,
        token: str,
        events: Sequence[tuple[str, int, str, str]],
        client: Any = None,
    ) -> Any:
        """Add output events (``(name, attempt, model or reason, text)``) to the job's
        events while ``token`` holds its lease: 1 written, 0 lease lost. With ``client`` (a
        pipeline) the call is queued there and its answer comes from the pipeline."""
        args: list[Any] = [token]
        for name, attempt, label, text in events:
            args += [name, attempt, label, text]
        return self._emit_output(keys=[keys.job(job_id)], args=args, client=client)
