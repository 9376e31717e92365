"""Deterministic replies, tool arguments, embeddings and token counts.

Everything here is a pure function of its inputs: the same request gives the
same reply text, the same tool arguments and the same vectors, run after run.

Token accounting (used for ``usage`` and for the TPM limit, consistently):

* input: ``ceil(chars / 4)`` of all the text a request carries (at least 1);
* output: one token per word of reply text; for a tool call or a JSON answer,
  ``ceil(chars / 4)`` of the name plus serialized arguments.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

CONTENT_FILTER_MARKER = "[[content_filter]]"
MIN_WORDS = 10
MAX_WORDS = 40

WORDS = (
    "the", "courier", "carries", "a", "parcel", "through", "quiet", "streets", "before",
    "dawn", "and", "every", "reply", "arrives", "on", "time", "with", "its", "usage",
    "counted", "tokens", "flow", "like", "water", "over", "stones", "while", "workers",
    "wait", "for", "their", "next", "job", "queue", "grows", "short", "then", "long",
    "again", "as", "rate", "limits", "open", "close", "in", "sliding", "windows", "of",
    "sixty", "seconds", "simulated", "models", "answer", "politely", "never", "tired",
    "always", "same", "given", "prompt", "signal", "webhook", "lands", "safely",
)  # fmt: skip

Finish = Literal["end", "length", "stop_sequence", "tool", "filtered"]
_PIECES = re.compile(r"\s*\S+\s*")


def estimate_tokens(chars: int) -> int:
    """Input-side estimate: ceil(chars / 4), at least 1."""
    return max(1, math.ceil(chars / 4))


def seed_of(*parts: Any) -> bytes:
    """A stable digest of JSON-serializable request parts (model, system, messages...)."""
    material = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(material.encode()).digest()


def stream_pieces(text: str) -> list[str]:
    """Split reply text into word-sized stream deltas whose concatenation is ``text``."""
    return _PIECES.findall(text) or ([text] if text else [])


@dataclass(slots=True)
class ToolSpec:
    """The tool a reply will call: its name and JSON schema for the arguments."""

    name: str
    schema: Mapping[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Reply:
    """A provider-neutral answer; each API module maps it to its own shape."""

    finish: Finish
    text: str = ""
    output_tokens: int = 0
    stop_sequence: str | None = None
    tool_name: str | None = None
    tool_id: str = ""
    tool_arguments: dict[str, Any] = field(default_factory=dict)

    @property
    def arguments_json(self) -> str:
        return json.dumps(self.tool_arguments, separators=(",", ":"))


def reply_words(seed: bytes) -> list[str]:
    """10 to 40 words chosen by the seed; the first capitalized, the last ending in '.'."""
    stream = hashlib.sha256(seed + b"/words").digest() + hashlib.sha256(seed + b"/more").digest()
    count = MIN_WORDS + stream[0] % (MAX_WORDS - MIN_WORDS + 1)
    words = [WORDS[b % len(WORDS)] for b in stream[1 : 1 + count]]
    words[0] = words[0].capitalize()
    words[-1] += "."
    return words


def compose_text(seed: bytes, *, max_tokens: int | None, stop: Sequence[str]) -> Reply:
    """The reply text for ``seed``, cut at the earliest stop string or at ``max_tokens`` words."""
    words = reply_words(seed)
    text = " ".join(words)
    cut_at, hit = len(text), None
    for s in stop:
        pos = text.find(s) if s else -1
        if 0 <= pos < cut_at:
            cut_at, hit = pos, s
    if hit is not None:
        text = text[:cut_at]
    count = len(text.split())
    if max_tokens is not None and count > max_tokens:
        kept = words[:max_tokens]
        return Reply(finish="length", text=" ".join(kept), output_tokens=len(kept))
    if hit is not None:
        return Reply(finish="stop_sequence", text=text, output_tokens=count, stop_sequence=hit)
    return Reply(finish="end", text=text, output_tokens=count)


def compose_tool_call(seed: bytes, tool: ToolSpec, id_prefix: str) -> Reply:
    """A call to ``tool`` with arguments filled from its schema's required properties."""
    arguments = value_for_schema(tool.schema)
    if not isinstance(arguments, dict):
        arguments = {}
    reply = Reply(finish="tool", tool_name=tool.name, tool_arguments=arguments)
    reply.tool_id = id_prefix + hashlib.sha256(seed + b"/tool").hexdigest()[:24]
    reply.output_tokens = estimate_tokens(len(tool.name) + len(reply.arguments_json))
    return reply


def compose_json(seed: bytes, schema: Mapping[str, Any] | None) -> Reply:
    """A JSON answer: filled from ``schema`` when given, else ``{"text": <reply text>}``."""
    value: Any = value_for_schema(schema) if schema else {"text": " ".join(reply_words(seed))}
    text = json.dumps(value, separators=(",", ":"))
    return Reply(finish="end", text=text, output_tokens=estimate_tokens(len(text)))


_DEFAULTS: dict[str, Any] = {
    "string": "x",
    "integer": 0,
    "number": 0,
    "boolean": False,
    "array": [],
    "null": None,
}


def value_for_schema(schema: Mapping[str, Any] | None, depth: int = 0) -> Any:
    """A small value that satisfies a JSON schema's required properties ("x" for strings)."""
    if not isinstance(schema, Mapping) or depth > 8:
        return {}
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    kind = schema.get("type", "object")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind != "object":
        return _DEFAULTS.get(str(kind), "x")
    props = schema.get("properties") or {}
    required = schema.get("required") or []
    out: dict[str, Any] = {}
    for name in required:
        if isinstance(name, str):
            prop = props.get(name) if isinstance(props, Mapping) else None
            out[name] = value_for_schema(prop or {"type": "string"}, depth + 1)
    return out


def embedding(text: str, dims: int) -> list[float]:
    """A unit-length float32-exact vector of ``dims`` values derived from sha256(text)."""
    data = text.encode()
    raw = b"".join(
        hashlib.sha256(data + i.to_bytes(4, "little")).digest() for i in range((dims + 7) // 8)
    )
    ints = struct.unpack(f"<{dims}I", raw[: 4 * dims])
    values = [n / 2_147_483_648.0 - 1.0 for n in ints]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    packed = struct.pack(f"<{dims}f", *(v / norm for v in values))
    return list(struct.unpack(f"<{dims}f", packed))


def pack_float32(values: Sequence[float]) -> bytes:
    """Little-endian float32 bytes, the payload of OpenAI's ``encoding_format=base64``."""
    return struct.pack(f"<{len(values)}f", *values)
