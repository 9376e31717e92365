"""A job's live events (docs/contract.md, Live events and streaming): how they are kept and
how they read.

Every event of a job is an entry of one Redis stream (:data:`core.keys.JOB_EVENT_LOG`),
added only inside the Lua scripts of :mod:`core.scripts`: a status event in the same
script as the status change it tells of, so events are exactly once and in order; output
events only while the writer still holds the job's lease. Each entry is also published on
the job's channel (:data:`core.keys.JOB_LIVE`) for the API's live readers. Entry ids are
``1-0``, ``2-0``, … (a counter in the record, ``ev_seq``; Redis 6.2, which ``courier dev``
may embed, has no ``XADD key 0-*``): the SSE ``id`` is the part before the dash, so ids are
consecutive, and a reader that sees ``n + 2`` after ``n`` knows it missed one.

An entry's fields: ``e`` (the event name), then the event's own fields as strings;
``at`` in milliseconds. A terminal event (``job.succeeded`` …) carries only ``at``: its
data is the job as ``GET /v1/jobs/{id}`` shows it, read when it is sent.

Bounds (README, Live events and streaming): the stream expires with the job's record
(both at the record's TTL), output deltas are batched by the worker
(:mod:`workers.run.outputs`), and :data:`MAX_EVENTS_PER_JOB` caps the entries of one job
(``XADD MAXLEN ~``): past it the oldest are trimmed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from core.jobs import TERMINAL, iso

STATUS = "job.status"
DELTA = "output.delta"
RESET = "output.reset"
TERMINAL_EVENTS = frozenset(f"job.{status}" for status in TERMINAL)
EVENT_NAMES = frozenset({STATUS, DELTA, RESET, *TERMINAL_EVENTS})

MAX_EVENTS_PER_JOB = 20_000
MAX_EVENT_ID = 2**63 - 1
_EVENT_ID = re.compile(r"[0-9]{1,19}")


def parse_event_id(raw: str) -> int:
    """An event id as a client sends it back (``Last-Event-ID``, ``?after=``): a decimal
    integer ≥ 0; ValueError otherwise."""
    text = raw.strip()
    if not _EVENT_ID.fullmatch(text) or int(text) > MAX_EVENT_ID:
        raise ValueError(f"an event id is a decimal integer >= 0, not {raw[:40]!r}")
    return int(text)


def entry_id(event_id: int) -> str:
    """The stream entry id of an event id."""
    return f"{event_id}-0"


@dataclass(frozen=True, slots=True)
class JobEvent:
    """One stored event: its id within the job, its name and its stored fields."""

    id: int
    event: str
    fields: Mapping[str, str]

    @property
    def terminal(self) -> bool:
        return self.event in TERMINAL_EVENTS

    def data(self, job_view: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The event's ``data`` object; a terminal event's is ``job_view``."""
        f = self.fields
        if self.event == STATUS:
            return {
                "status": f.get("status"),
                "attempt": int(f.get("attempt") or 0),
                "waiting_for": f.get("waiting_for") or None,
                "model": f.get("model"),
                "at": iso(int(f.get("at") or 0) / 1000),
            }
        if self.event == DELTA:
            return {
                "attempt": int(f.get("attempt") or 0),
                "model": f.get("model"),
                "text": f.get("text", ""),
            }
        if self.event == RESET:
            return {"attempt": int(f.get("attempt") or 0), "reason": f.get("reason", "")}
        return dict(job_view or {})


def from_entry(stream_id: str, fields: Mapping[str, str]) -> JobEvent:
    """An event from a stream entry (``XRANGE``)."""
    rest = {k: v for k, v in fields.items() if k != "e"}
    return JobEvent(int(stream_id.partition("-")[0] or 0), fields.get("e", ""), rest)


def from_live(payload: str | bytes) -> JobEvent:
    """An event from a message on a job's live channel: ``[entry id, field, value, …]``."""
    items = json.loads(payload)
    flat = [str(item) for item in items[1:]]
    return from_entry(str(items[0]), dict(zip(flat[::2], flat[1::2], strict=False)))


def sse_frame(event_id: int, event: str, data: Mapping[str, Any]) -> bytes:
    """One Server-Sent Event: ``id``, ``event`` and one JSON ``data`` line."""
    body = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    return f"id: {event_id}\nevent: {event}\ndata: {body}\n\n".encode()


KEEPALIVE_FRAME = b": keepalive\n\n"
