"""The webhook event body: ``{"type": "job.<status>", "timestamp": ..., "data": <the job>}``.

Bodies are compact ASCII JSON (so the bytes signed are the bytes sent). A body larger
than ``COURIER_CALLBACK_MAX_PAYLOAD_BYTES`` carries a shortened ``result`` (the reply
text cut, message and embeddings left out) and ``data.truncated: true``; the full job
stays readable with ``GET /v1/jobs/{id}``.
"""

from __future__ import annotations

import json
import math
from typing import Any

from core.jobs import iso
from core.records import Record, to_view


def dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def event(record: Record) -> dict[str, Any]:
    """The event for a finished job. Its ``timestamp`` is when the job ended, so it is
    the same on every retry; ``data`` is the job without the delivery log."""
    data = to_view(record)
    data["callback"] = {k: v for k, v in data["callback"].items() if k != "log"}
    finished = record.get("finished_at")
    return {
        "type": f"job.{record['status']}",
        "timestamp": iso(float(finished)) if finished else data["created_at"],
        "data": data,
    }


def _shortened(result: dict[str, Any], output_chars: int) -> dict[str, Any]:
    short = {k: v for k, v in result.items() if k not in ("message", "embeddings", "output")}
    output = result.get("output")
    short["output"] = output[:output_chars] if isinstance(output, str) else None
    short["message"] = None
    short["embeddings"] = None
    short["truncated"] = True
    return short


def body(event_: dict[str, Any], max_bytes: int) -> tuple[bytes, bool]:
    """The bytes to send and whether ``result`` had to be shortened to fit ``max_bytes``."""
    raw = dumps(event_)
    data = event_["data"]
    if len(raw) <= max_bytes or not isinstance(data.get("result"), dict):
        return raw, False
    result = data["result"]
    output = result.get("output")
    chars = len(output) if isinstance(output, str) else 0
    while True:
        shortened = {**event_, "data": {**data, "result": _shortened(result, chars)}}
        shortened["data"]["truncated"] = True
        raw = dumps(shortened)
        if len(raw) <= max_bytes or chars == 0:
            return raw, True
        # Cut by the overshoot, in characters at the output's average escaped width.
        per_char = max(1.0, (len(dumps(output[:chars])) - 2) / chars) if output else 1.0
        chars = max(0, chars - math.ceil((len(raw) - max_bytes) / per_char))
