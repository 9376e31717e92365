"""A job record as Redis holds it (a hash of strings) and as the API shows it
(docs/contract.md, The job)."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

from ulid import ULID

from core.jobs import iso

Record = dict[str, str]
JSON_FIELDS = ("request", "fallback_models", "metadata", "result", "error", "callback")
# json.dumps(value, separators=(",", ":")), without building an encoder per call
_compact = json.JSONEncoder(separators=(",", ":")).encode


def new_job_id() -> str:
    """``job_`` + a ULID: unique and sortable by creation time."""
    return f"job_{ULID()}"


def now_ms() -> int:
    return int(time.time() * 1000)


def encode_fields(fields: Mapping[str, Any]) -> list[str]:
    """``{name: value}`` → ``[name, value, ...]`` as stored: JSON for the structured fields."""
    out: list[str] = []
    for name, value in fields.items():
        out.append(name)
        if name in JSON_FIELDS:
            out.append(_compact(value))
        else:
            out.append("" if value is None else str(value))
    return out


def to_view(record: Record) -> dict[str, Any]:
    """A stored record → the job as the API shows it (docs/contract.md, The job)."""

    def loads(name: str) -> Any:
        raw = record.get(name)
        return json.loads(raw) if raw else None

    def ts(name: str) -> str | None:
        raw = record.get(name)
        return iso(float(raw)) if raw else None

    callback = loads("callback") or {"url": None, "status": "none", "attempts": 0}
    return {
        "id": record["id"],
        "status": record["status"],
        "model": record["model"],
        "kind": record.get("kind", "chat"),
        "stream": record.get("stream") == "1",
        "priority": record["priority"],
        "attempts": int(record.get("attempts") or 0),
        "created_at": ts("created_at"),
        "started_at": ts("started_at"),
        "finished_at": ts("finished_at"),
        "expires_at": ts("expires_at"),
        "result": loads("result"),
        "error": loads("error"),
        "callback": callback,
        "metadata": loads("metadata") or {},
        "waiting_for": record.get("waiting_for") or None,
        "cost_usd": cost_usd(record),
        "conversation_id": record.get("conversation_id")
        or (record["id"] if record.get("kind", "chat") == "chat" else None),
        "parent_job_id": record.get("parent_job_id") or None,
    }


def cost_usd(record: Record) -> float | None:
    """The job's cost: the sum its calls settled (``cost_nano``), None when one of them had
    no price or the job's model has none (the API sets ``cost_nano`` at creation only for a
    priced model)."""
    raw = record.get("cost_nano")
    if record.get("cost_unpriced") or raw is None or raw == "":
        return None
    return round(int(raw) / 1_000_000_000, 9)
