"""Anthropic wire format: ``POST /v1/messages`` (with SSE events)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.datastructures import Headers
from starlette.responses import Response

from simulator import replies
from simulator.dialogue import check_anthropic_turns
from simulator.errors import BadRequest, anthropic_error, dumps, json_response
from simulator.limits import Snapshot, anthropic_headers
from simulator.pipeline import Call, bearer_token, sse_response
from simulator.replies import CONTENT_FILTER_MARKER, Reply, ToolSpec

STOP_REASONS = {
    "end": "end_turn",
    "stop_sequence": "stop_sequence",
    "length": "max_tokens",
    "tool": "tool_use",
    "filtered": "refusal",
}


def block_text(content: Any) -> str:
    """Text carried by a ``content`` (string or blocks: text, tool_use input, tool_result)."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    parts: list[str] = []
    for block in content:
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind == "text" and isinstance(block.get("text"), str):
            parts.append(block["text"])
        elif kind == "tool_use":
            parts.append(f"{block.get('name', '')}{dumps(block.get('input', {})).decode()}")
        elif kind == "tool_result":
            parts.append(block_text(block.get("content")))
    return "\n".join(parts)


def _is_tool_result(message: Mapping[str, Any]) -> bool:
    content = message.get("content")
    return (
        message.get("role") == "user"
        and isinstance(content, list)
        and any(isinstance(b, dict) and b.get("type") == "tool_result" for b in content)
    )


class Messages:
    provider = "anthropic"

    def api_key(self, headers: Headers) -> str | None:
        return headers.get("x-api-key") or bearer_token(headers)

    def error(
        self,
        status: int,
        message: str | None,
        headers: dict[str, str],
        *,
        param: str | None = None,
        error_type: str | None = None,
    ) -> Response:
        return anthropic_error(status, message, headers, headers.get("request-id", ""))

    def rate_headers(self, snapshot: Snapshot | None, wall_now: float) -> dict[str, str]:
        return anthropic_headers(snapshot, wall_now)

    def parse(self, body: Any) -> Call:
        if not isinstance(body, dict):
            raise BadRequest("The request body must be a JSON object.")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise BadRequest("model: Field required")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise BadRequest("messages: Field required (a non-empty list)")
        max_tokens = body.get("max_tokens")
        if max_tokens is None:
            raise BadRequest("max_tokens: Field required")
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
            raise BadRequest("max_tokens: Input should be an integer >= 1")
        system = body.get("system")
        texts = [block_text(system)] if system else []
        last_user = ""
        for message in messages:
            if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
                raise BadRequest("messages: each message needs role 'user' or 'assistant'")
            text = block_text(message.get("content"))
            texts.append(text)
            if message["role"] == "user":
                last_user = text
        check_anthropic_turns(messages, body.get("tools"))
        text = "\n".join(texts)
        raw_stops = body.get("stop_sequences")
        stops = [s for s in raw_stops if isinstance(s, str)] if isinstance(raw_stops, list) else []
        seed = replies.seed_of(model, system, messages)
        tool = _tool(body, messages)
        if CONTENT_FILTER_MARKER in text:
            reply = Reply(finish="filtered")
        elif tool is not None:
            reply = replies.compose_tool_call(seed, tool, "toolu_")
        else:
            reply = replies.compose_text(seed, max_tokens=max_tokens, stop=stops)
        return Call(
            model=model,
            text=text,
            prompt=last_user[:200],
            input_tokens=replies.estimate_tokens(len(text)),
            output_tokens=reply.output_tokens,
            stream=bool(body.get("stream")),
            payload=reply,
        )

    def respond(self, call: Call, request_id: str, headers: dict[str, str]) -> Response:
        reply: Reply = call.payload
        message_id = "msg_" + request_id.removeprefix("req_")
        if call.stream:
            frames = [
                b"event: " + event["type"].encode() + b"\ndata: " + dumps(event) + b"\n\n"
                for event in _events(message_id, call, reply)
            ]
            return sse_response(frames, headers, call.plan)
        body = {
            "id": message_id,
            "type": "message",
            "role": "assistant",
            "model": call.model,
            "content": _content(reply),
            "stop_reason": STOP_REASONS[reply.finish],
            "stop_sequence": reply.stop_sequence,
            "usage": _usage(call.input_tokens, call.output_tokens),
        }
        return json_response(body, 200, headers)


def _tool(body: Mapping[str, Any], messages: list[Any]) -> ToolSpec | None:
    """The tool to call, or None when there are no tools, the last message carries a
    ``tool_result``, or ``tool_choice`` is ``{"type": "none"}``."""
    tools = body.get("tools")
    if not isinstance(tools, list) or not tools or _is_tool_result(messages[-1]):
        return None
    choice = body.get("tool_choice")
    if isinstance(choice, dict) and choice.get("type") == "none":
        return None
    wanted = (
        choice.get("name") if isinstance(choice, dict) and choice.get("type") == "tool" else None
    )
    for tool in tools:
        name = tool.get("name") if isinstance(tool, dict) else None
        if isinstance(tool, dict) and isinstance(name, str) and wanted in (None, name):
            schema = tool.get("input_schema")
            return ToolSpec(name, schema if isinstance(schema, dict) else {})
    return None


def _usage(input_tokens: int, output_tokens: int) -> dict[str, Any]:
    return {
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }


def _content(reply: Reply) -> list[dict[str, Any]]:
    if reply.finish == "filtered":
        return []
    if reply.finish == "tool":
        return [
            {
                "type": "tool_use",
                "id": reply.tool_id,
                "name": reply.tool_name,
                "input": reply.tool_arguments,
            }
        ]
    return [{"type": "text", "text": reply.text}]


def _events(message_id: str, call: Call, reply: Reply) -> list[dict[str, Any]]:
    """The SSE events of a streamed message, in order."""
    start: dict[str, Any] = {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": call.model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": _usage(call.input_tokens, 1),
    }
    events: list[dict[str, Any]] = [{"type": "message_start", "message": start}]
    blocks = _content(reply)
    if blocks:
        block = blocks[0]
        if block["type"] == "tool_use":
            opening = {**block, "input": {}}
            deltas = [{"type": "input_json_delta", "partial_json": reply.arguments_json}]
        else:
            opening = {"type": "text", "text": ""}
            deltas = [
                {"type": "text_delta", "text": piece} for piece in replies.stream_pieces(reply.text)
            ]
        events.append({"type": "content_block_start", "index": 0, "content_block": opening})
        events.append({"type": "ping"})
        events.extend({"type": "content_block_delta", "index": 0, "delta": d} for d in deltas)
        events.append({"type": "content_block_stop", "index": 0})
    stop = {"stop_reason": STOP_REASONS[reply.finish], "stop_sequence": reply.stop_sequence}
    events.append(
        {"type": "message_delta", "delta": stop, "usage": {"output_tokens": call.output_tokens}}
    )
    events.append({"type": "message_stop"})
    return events
