"""Streamed answers put back together: each provider's stream events → the same JSON the
non-streamed call returns, so one result builder serves both and a streamed job ends
exactly as a non-streamed one would (``output``, ``finish_reason``, ``usage``, tool calls
assembled from their deltas).

Text is handed to ``on_text`` as it arrives. A stream that ends before its last event
(OpenAI: the finish reason and the usage chunk; Anthropic: ``message_stop``) is a
provider fault, retryable: the connection dropped or the body was cut short.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from core.errors import ProviderUnavailable

OnText = Callable[[str], None]


class IncompleteStream(ProviderUnavailable):
    """The stream ended before its last event: cut short."""


class OpenAIChunks:
    """``chat.completion.chunk`` objects (``stream_options.include_usage``) → a chat
    completion's JSON."""

    def __init__(self, on_text: OnText) -> None:
        self.on_text = on_text
        self.content: list[str] = []
        self.refusal: list[str] = []
        self.tool_calls: dict[int, dict[str, Any]] = {}
        self.finish_reason: str | None = None
        self.usage: Mapping[str, Any] | None = None
        self.seen_choice = False

    def feed(self, chunk: Mapping[str, Any]) -> None:
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue
            self.seen_choice = True
            delta = choice.get("delta") or {}
            text = delta.get("content")
            if text:
                self.content.append(text)
                self.on_text(text)
            if delta.get("refusal"):
                self.refusal.append(delta["refusal"])
            for call in delta.get("tool_calls") or ():
                self._tool_call(call)
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]

    def _tool_call(self, part: Mapping[str, Any]) -> None:
        call = self.tool_calls.setdefault(
            int(part.get("index", len(self.tool_calls))),
            {"id": "", "type": "function", "function": {"name": "", "arguments": ""}},
        )
        if part.get("id"):
            call["id"] = part["id"]
        if part.get("type"):
            call["type"] = part["type"]
        function = part.get("function") or {}
        if function.get("name"):
            call["function"]["name"] += function["name"]
        if function.get("arguments"):
            call["function"]["arguments"] += function["arguments"]

    def completion(self) -> dict[str, Any]:
        if self.finish_reason is None or self.usage is None:
            missing = "finish reason" if self.finish_reason is None else "usage"
            raise IncompleteStream(f"openai: the stream ended before its {missing}")
        message: dict[str, Any] = {"role": "assistant", "content": "".join(self.content) or None}
        if self.tool_calls:
            message["tool_calls"] = [self.tool_calls[i] for i in sorted(self.tool_calls)]
        if self.refusal:
            message["refusal"] = "".join(self.refusal)
        choice = {"index": 0, "message": message, "finish_reason": self.finish_reason}
        return {"choices": [choice], "usage": self.usage}


class AnthropicEvents:
    """Messages API stream events → a message's JSON."""

    def __init__(self, on_text: OnText) -> None:
        self.on_text = on_text
        self.message: dict[str, Any] = {}
        self.blocks: dict[int, dict[str, Any]] = {}
        self.partial_json: dict[int, list[str]] = {}
        self.usage: dict[str, Any] = {}
        self.stopped = False

    def feed(self, event: Mapping[str, Any]) -> None:
        kind = event.get("type")
        if kind == "message_start":
            self.message = dict(event.get("message") or {})
            self.usage.update(self.message.get("usage") or {})
        elif kind == "content_block_start":
            self.blocks[int(event.get("index", 0))] = dict(event.get("content_block") or {})
        elif kind == "content_block_delta":
            self._delta(int(event.get("index", 0)), event.get("delta") or {})
        elif kind == "content_block_stop":
            self._stop_block(int(event.get("index", 0)))
        elif kind == "message_delta":
            self.message.update(event.get("delta") or {})
            self.usage.update({k: v for k, v in (event.get("usage") or {}).items() if v})
        elif kind == "message_stop":
            self.stopped = True

    def _delta(self, index: int, delta: Mapping[str, Any]) -> None:
        block = self.blocks.setdefault(index, {"type": "text", "text": ""})
        if delta.get("type") == "text_delta":
            text = delta.get("text") or ""
            block["text"] = block.get("text", "") + text
            if text:
                self.on_text(text)
        elif delta.get("type") == "input_json_delta":
            self.partial_json.setdefault(index, []).append(delta.get("partial_json") or "")

    def _stop_block(self, index: int) -> None:
        block = self.blocks.get(index)
        if block is not None and block.get("type") == "tool_use" and index in self.partial_json:
            raw = "".join(self.partial_json.pop(index))
            block["input"] = json.loads(raw) if raw.strip() else {}

    def final_message(self) -> dict[str, Any]:
        if not self.stopped:
            raise IncompleteStream("anthropic: the stream ended before message_stop")
        content = [self.blocks[i] for i in sorted(self.blocks)]
        return {**self.message, "content": content, "usage": self.usage}
