"""The simulator's mutable state: live config, request log, faults, rate windows, dice."""

from __future__ import annotations

import random
from collections import deque
from dataclasses import asdict, dataclass, field, replace
from itertools import islice
from typing import Any

from simulator.faults import FaultQueue, Outage, parse_fault_mix
from simulator.limits import RateLimiter

LOG_LIMIT = 100_000


@dataclass(slots=True)
class SimConfig:
    """Start-up settings; each can change live. ``fault_mix`` (status → share), when not
    empty, replaces ``error_rate``'s dice."""

    latency: float = 0.0
    error_rate: float = 0.0
    rpm: int = 0
    tpm: int = 0
    seed: int = 0
    fault_mix: dict[int, float] = field(default_factory=dict)
    stream_tps: float = 0.0  # events per second of a streamed answer; 0: all at once
    record_stream_times: bool = False  # log when each event of a stream was sent (benches)
    record_messages: bool = False  # log each request's messages and system as received (tests)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["fault_mix"] = {str(k): v for k, v in self.fault_mix.items()}
        return out

    def updated(self, changes: Any) -> SimConfig:
        """A copy with ``changes`` (a JSON object) applied; raises ValueError."""
        if not isinstance(changes, dict):
            raise ValueError("body must be a JSON object")
        names = {"latency", "error_rate", "rpm", "tpm", "seed", "fault_mix", "stream_tps"}
        flags = ("record_stream_times", "record_messages")
        unknown = set(changes) - names - set(flags)
        if unknown:
            raise ValueError(f"unknown config fields: {sorted(unknown)}")
        new = replace(self, fault_mix=dict(self.fault_mix))
        if "fault_mix" in changes:
            new.fault_mix = parse_fault_mix(changes["fault_mix"] or {})
        for flag in flags:
            if flag in changes:
                if not isinstance(changes[flag], bool):
                    raise ValueError(f"{flag} must be true or false")
                setattr(new, flag, changes[flag])
        for name in ("latency", "error_rate", "stream_tps"):
            if name in changes:
                value = changes[name]
                if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
                    raise ValueError(f"{name} must be a number >= 0")
                setattr(new, name, float(value))
        if new.error_rate > 1:
            raise ValueError("error_rate must be <= 1")
        for name in ("rpm", "tpm", "seed"):
            if name in changes:
                value = changes[name]
                if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                    raise ValueError(f"{name} must be an integer >= 0")
                setattr(new, name, value)
        return new


class RequestLog:
    """The last ``LOG_LIMIT`` API requests in arrival order; entries are updated in place."""

    def __init__(self, limit: int = LOG_LIMIT) -> None:
        self._entries: deque[dict[str, Any]] = deque(maxlen=limit)
        self.total = 0

    def clear(self) -> None:
        self._entries.clear()
        self.total = 0

    def open(self, request_id: str, path: str, started: float) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "seq": self.total,
            "id": request_id,
            "path": path,
            "model": None,
            "key_suffix": None,
            "key_sha256": None,  # sha256(key)[:12]
            "key_header": None,  # authorization | api-key | x-api-key
            "headers": {},  # non-routine request headers, credentials excepted
            "api_version": None,  # the api-version query parameter (Azure)
            "prompt": None,
            "started": started,
            "finished": None,
            "status": None,
            "input_tokens": 0,
            "output_tokens": 0,
        }
        self.total += 1
        self._entries.append(entry)
        return entry

    def since(self, seq: int) -> list[dict[str, Any]]:
        """Entries whose ``seq`` is at least ``seq`` (0 = all still kept)."""
        first = self.total - len(self._entries)
        return list(islice(self._entries, max(seq - first, 0), None))


class SimState:
    """Everything a request handler reads or changes; one per app."""

    def __init__(self, config: SimConfig) -> None:
        self.startup = replace(config)
        self.config = replace(config)
        self.rng = random.Random(config.seed)
        self.faults = FaultQueue()
        self.limiter = RateLimiter()
        self.log = RequestLog()
        self.outage: Outage | None = None

    def reset(self) -> None:
        """Back to start-up: config, dice, and empty log, faults, outage and rate windows."""
        self.config = replace(self.startup)
        self.rng.seed(self.config.seed)
        self.faults.clear()
        self.outage = None
        self.limiter.reset()
        self.log.clear()

    def configure(self, changes: Any) -> None:
        new = self.config.updated(changes)
        if new.seed != self.config.seed:
            self.rng.seed(new.seed)
        self.config = new
