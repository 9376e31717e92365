"""OpenAI wire format: ``POST /v1/chat/completions`` (with SSE) and ``POST /v1/embeddings``."""

from __future__ import annotations

import base64
import time
from collections.abc import Mapping
from typing import Any

from starlette.datastructures import Headers
from starlette.responses import Response

from simulator import replies
from simulator.dialogue import check_openai_turns
from simulator.errors import BadRequest, dumps, json_response, openai_error
from simulator.limits import Snapshot, openai_headers
from simulator.pipeline import Call, bearer_token, sse_response
from simulator.replies import CONTENT_FILTER_MARKER, Reply, ToolSpec

FINISH_REASONS = {
    "end": "stop",
    "stop_sequence": "stop",
    "length": "length",
    "tool": "tool_calls",
    "filtered": "content_filter",
}
FINGERPRINT = "fp_courier_sim"
DEFAULT_DIMENSIONS = 16
MAX_DIMENSIONS = 4096


class OpenAIDialect:
    provider = "openai"

    def api_key(self, headers: Headers) -> str | None:
        return bearer_token(headers)

    def error(
        self,
        status: int,
        message: str | None,
        headers: dict[str, str],
        *,
        param: str | None = None,
        error_type: str | None = None,
    ) -> Response:
        return openai_error(status, message, headers, param=param, error_type=error_type)

    def rate_headers(self, snapshot: Snapshot | None, wall_now: float) -> dict[str, str]:
        return openai_headers(snapshot)


def content_text(content: Any) -> str:
    """Text of a message ``content``: a string, or the ``text`` of its content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)
        )
    return ""


def _model(body: Any) -> str:
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("you must provide a model parameter", "model")
    return model


def _positive_int(body: Mapping[str, Any], name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise BadRequest(f"Invalid '{name}': expected an integer >= 1.", name)
    return value


class ChatCompletions(OpenAIDialect):
    def parse(self, body: Any) -> Call:
        model = _model(body)
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise BadRequest("'messages' must be a non-empty array.", "messages")
        texts: list[str] = []
        last_user = ""
        for message in messages:
            if not isinstance(message, dict) or not isinstance(message.get("role"), str):
                raise BadRequest("Each message must be an object with a 'role'.", "messages")
            text = content_text(message.get("content"))
            for call in message.get("tool_calls") or []:
                function = call.get("function") if isinstance(call, dict) else None
                if isinstance(function, dict):
                    text += f"{function.get('name', '')}{function.get('arguments', '')}"
            texts.append(text)
            if message["role"] == "user":
                last_user = text
        check_openai_turns(messages)
        text = "\n".join(texts)
        max_tokens = _positive_int(body, "max_completion_tokens") or _positive_int(
            body, "max_tokens"
        )
        stop = body.get("stop")
        stops = [stop] if isinstance(stop, str) else [s for s in stop or [] if isinstance(s, str)]
        seed = replies.seed_of(model, messages)
        tool = _tool(body, messages)
        response_format = body.get("response_format")
        if CONTENT_FILTER_MARKER in text:
            reply = Reply(finish="filtered")
        elif tool is not None:
            reply = replies.compose_tool_call(seed, tool, "call_")
        elif isinstance(response_format, dict) and response_format.get("type") in (
            "json_object",
            "json_schema",
        ):
            schema = (response_format.get("json_schema") or {}).get("schema")
            reply = replies.compose_json(seed, schema if isinstance(schema, dict) else None)
        else:
            reply = replies.compose_text(seed, max_tokens=max_tokens, stop=stops)
        options = body.get("stream_options")
        include_usage = isinstance(options, dict) and bool(options.get("include_usage"))
        return Call(
            model=model,
            text=text,
            prompt=last_user[:200],
            input_tokens=replies.estimate_tokens(len(text)),
            output_tokens=reply.output_tokens,
            stream=bool(body.get("stream")),
            payload=(reply, include_usage),
        )

    def respond(self, call: Call, request_id: str, headers: dict[str, str]) -> Response:
        reply, include_usage = call.payload
        completion_id = "chatcmpl-" + request_id.removeprefix("req_")
        usage = {
            "prompt_tokens": call.input_tokens,
            "completion_tokens": call.output_tokens,
            "total_tokens": call.input_tokens + call.output_tokens,
        }
        if call.stream:
            chunks = _chunks(completion_id, call.model, reply, usage if include_usage else None)
            frames = [b"data: " + dumps(chunk) + b"\n\n" for chunk in chunks]
            frames.append(b"data: [DONE]\n\n")
            return sse_response(frames, headers, call.plan)
        message: dict[str, Any] = {"role": "assistant", "content": reply.text, "refusal": None}
        if reply.finish == "tool":
            message["content"] = None
            message["tool_calls"] = [_tool_call(reply)]
        body = {
            "id": completion_id,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": call.model,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": FINISH_REASONS[reply.finish],
                }
            ],
            "usage": usage,
            "system_fingerprint": FINGERPRINT,
        }
        return json_response(body, 200, headers)


def _tool(body: Mapping[str, Any], messages: list[Any]) -> ToolSpec | None:
    """The tool to call, or None when there are no tools, the last message is a tool
    result, or ``tool_choice`` is ``"none"``."""
    tools = body.get("tools")
    if not isinstance(tools, list) or not tools or messages[-1].get("role") == "tool":
        return None
    choice = body.get("tool_choice")
    if choice == "none":
        return None
    wanted = None
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        wanted = choice["function"].get("name")
    for tool in tools:
        function = tool.get("function") if isinstance(tool, dict) else None
        name = function.get("name") if isinstance(function, dict) else None
        if isinstance(function, dict) and isinstance(name, str) and wanted in (None, name):
            schema = function.get("parameters")
            return ToolSpec(name, schema if isinstance(schema, dict) else {})
    return None


def _tool_call(reply: Reply) -> dict[str, Any]:
    return {
        "id": reply.tool_id,
        "type": "function",
        "function": {"name": reply.tool_name, "arguments": reply.arguments_json},
    }


def _chunks(
    completion_id: str, model: str, reply: Reply, usage: dict[str, int] | None
) -> list[dict[str, Any]]:
    """The ``chat.completion.chunk`` objects of a streamed answer, in order."""
    base = {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": FINGERPRINT,
    }

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        out = {**base, "choices": [choice]}
        if usage is not None:
            out["usage"] = None
        return out

    chunks = [chunk({"role": "assistant", "content": "", "refusal": None})]
    if reply.finish == "tool":
        call = _tool_call(reply)
        call["function"] = {"name": reply.tool_name, "arguments": ""}
        chunks.append(chunk({"tool_calls": [{"index": 0, **call}]}))
        arguments = {"index": 0, "function": {"arguments": reply.arguments_json}}
        chunks.append(chunk({"tool_calls": [arguments]}))
    else:
        chunks.extend(chunk({"content": piece}) for piece in replies.stream_pieces(reply.text))
    chunks.append(chunk({}, FINISH_REASONS[reply.finish]))
    if usage is not None:
        chunks.append({**base, "choices": [], "usage": usage})
    return chunks


class Embeddings(OpenAIDialect):
    def parse(self, body: Any) -> Call:
        model = _model(body)
        raw = body.get("input")
        single = not isinstance(raw, list) or not raw or isinstance(raw[0], int)
        items: list[Any] = [raw] if single else raw  # a string or one token array: one item
        texts: list[str] = []
        tokens = 0
        for item in items:
            if isinstance(item, str) and item:
                texts.append(item)
                tokens += replies.estimate_tokens(len(item))
            elif isinstance(item, list) and item and all(isinstance(t, int) for t in item):
                texts.append(" ".join(map(str, item)))
                tokens += len(item)
            else:
                raise BadRequest("'input' must be a non-empty string or array.", "input")
        dims = _positive_int(body, "dimensions") or DEFAULT_DIMENSIONS
        if dims > MAX_DIMENSIONS:
            raise BadRequest(f"'dimensions' must be <= {MAX_DIMENSIONS}.", "dimensions")
        encoding = body.get("encoding_format") or "float"
        if encoding not in ("float", "base64"):
            raise BadRequest("'encoding_format' must be 'float' or 'base64'.", "encoding_format")
        return Call(
            model=model,
            text="\n".join(texts),
            prompt=texts[-1][:200],
            input_tokens=tokens,
            payload=(texts, dims, encoding),
        )

    def respond(self, call: Call, request_id: str, headers: dict[str, str]) -> Response:
        texts, dims, encoding = call.payload
        data = []
        for i, text in enumerate(texts):
            vector = replies.embedding(text, dims)
            value: Any = vector
            if encoding == "base64":
                value = base64.b64encode(replies.pack_float32(vector)).decode()
            data.append({"object": "embedding", "index": i, "embedding": value})
        body = {
            "object": "list",
            "data": data,
            "model": call.model,
            "usage": {"prompt_tokens": call.input_tokens, "total_tokens": call.input_tokens},
        }
        return json_response(body, 200, headers)
