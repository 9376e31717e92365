"""Provider adapters without a server: request mapping, finish reasons, error mapping."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx2
import openai
import pytest

from core.errors import (
    AuthenticationFailed,
    ContentFiltered,
    CourierError,
    InvalidRequest,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
)
from core.retry_after import parse_retry_after
from workers.providers import anthropic_adapter, openai_adapter
from workers.providers.anthropic_adapter import (
    DEFAULT_MAX_TOKENS,
    JSON_OBJECT_INSTRUCTION,
    build_message_params,
)
from workers.providers.errors_map import map_sdk_error, rate_limit_headers
from workers.providers.openai_adapter import build_chat_params

OPENAI_KEY = "sk-test-openai-fake"
HI: dict[str, Any] = {"messages": [{"role": "user", "content": "Hi there"}], "max_tokens": 200}
WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


def test_openai_params_put_system_first_and_send_only_present_fields() -> None:
    params = build_chat_params("gpt-4o-mini", {**HI, "system": "Be brief.", "temperature": 0.2})
    assert params["messages"][0] == {"role": "system", "content": "Be brief."}
    assert params["messages"][1:] == HI["messages"]
    assert params["temperature"] == 0.2 and params["max_tokens"] == 200
    assert not {"top_p", "stop", "tools", "response_format", "system"} & set(params)


def test_anthropic_params_map_system_stop_tools_and_defaults() -> None:
    request = {
        "system": "Top.",
        "messages": [
            {"role": "system", "content": "Inner."},
            {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
        ],
        "stop": "END",
        "tools": [WEATHER_TOOL],
        "tool_choice": "required",
        "temperature": 1.7,
        "top_p": 0.9,
        "response_format": {"type": "json_object"},
    }
    params = build_message_params("claude-x", request)
    assert params["system"] == f"Top.\n\nInner.\n\n{JSON_OBJECT_INSTRUCTION}"
    assert params["messages"] == [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}]
    assert params["max_tokens"] == DEFAULT_MAX_TOKENS
    assert params["stop_sequences"] == ["END"]
    assert params["tools"] == [
        {
            "name": "get_weather",
            "description": "Weather for a city",
            "input_schema": WEATHER_TOOL["function"]["parameters"],
        }
    ]
    assert params["tool_choice"] == {"type": "any"}
    assert params["temperature"] == 1.0 and params["top_p"] == 0.9


def test_anthropic_params_map_tool_calls_and_merge_tool_results() -> None:
    calls = [
        {"id": f"call_{i}", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}}
        for i in (1, 2)
    ]
    request = {
        "messages": [
            {"role": "user", "content": "Go"},
            {"role": "assistant", "content": "Calling.", "tool_calls": calls},
            {"role": "tool", "tool_call_id": "call_1", "content": "one"},
            {"role": "tool", "tool_call_id": "call_2", "content": "two"},
            {"role": "user", "content": "Thanks"},
        ],
        "stop": ["x", "y"],
        "max_tokens": 50,
    }
    params = build_message_params("claude-x", request)
    assert [m["role"] for m in params["messages"]] == ["user", "assistant", "user"]
    assert params["messages"][1]["content"] == [
        {"type": "text", "text": "Calling."},
        {"type": "tool_use", "id": "call_1", "name": "f", "input": {"a": 1}},
        {"type": "tool_use", "id": "call_2", "name": "f", "input": {"a": 1}},
    ]
    assert params["messages"][2]["content"] == [
        {"type": "tool_result", "tool_use_id": "call_1", "content": "one"},
        {"type": "tool_result", "tool_use_id": "call_2", "content": "two"},
        {"type": "text", "text": "Thanks"},
    ]
    assert params["stop_sequences"] == ["x", "y"] and params["max_tokens"] == 50
    assert "system" not in params


def test_anthropic_json_schema_becomes_an_instruction() -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}}
    response_format = {"type": "json_schema", "json_schema": {"name": "n", "schema": schema}}
    params = build_message_params("m", {**HI, "response_format": response_format})
    assert json.dumps(schema, separators=(",", ":")) in params["system"]


@pytest.mark.parametrize(
    ("anthropic_reason", "openai_reason", "expected"),
    [
        ("end_turn", "stop", "stop"),
        ("stop_sequence", None, "stop"),
        ("max_tokens", "length", "length"),
        ("tool_use", "function_call", "tool_calls"),
        ("refusal", "content_filter", "content_filter"),
        ("something_new", "something_new", "error"),
    ],
)
def test_finish_reasons(anthropic_reason: str, openai_reason: str | None, expected: str) -> None:
    assert anthropic_adapter.normalize_finish_reason(anthropic_reason) == expected
    assert openai_adapter.normalize_finish_reason(openai_reason) == expected


def test_anthropic_params_reject_bad_input() -> None:
    bad_args = {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{oops"}}
    with pytest.raises(InvalidRequest):
        build_message_params("m", {"messages": [{"role": "assistant", "tool_calls": [bad_args]}]})
    with pytest.raises(InvalidRequest):
        build_message_params("m", {"messages": [{"role": "wizard", "content": "x"}]})
    with pytest.raises(InvalidRequest):
        build_message_params("m", {"prompt": "no messages"})


def test_retry_after_parsing() -> None:
    assert parse_retry_after({"retry-after-ms": "1500", "retry-after": "2"}) == 1.5
    assert parse_retry_after({"retry-after": "3"}) == 3.0
    when = datetime.now(UTC) + timedelta(seconds=30)
    parsed = parse_retry_after({"retry-after": format_datetime(when, usegmt=True)})
    assert parsed is not None and 25 < parsed <= 30
    openai_reset = {"x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "1m2.5s"}
    assert parse_retry_after(openai_reset) == 62.5
    assert parse_retry_after({}) is None
    kept = rate_limit_headers({"X-RateLimit-Limit-Requests": "5", "Retry-After": "1", "a": "b"})
    assert kept == {"x-ratelimit-limit-requests": "5", "retry-after": "1"}


def _status_error(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Any:
    request = httpx2.Request("POST", "http://provider.invalid/v1/chat/completions")
    response = httpx2.Response(status, request=request, headers=headers or {})
    return openai.APIStatusError(f"Error code: {status} - {body}", response=response, body=body)


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        (400, "content_filter", ContentFiltered),
        (400, "content_policy_violation", ContentFiltered),
        (400, None, InvalidRequest),
        (403, None, AuthenticationFailed),
        (404, "model_not_found", InvalidRequest),
        (408, None, ProviderTimeout),
        (409, None, InvalidRequest),
        (413, None, InvalidRequest),
        (422, None, InvalidRequest),
        (429, None, RateLimited),
        (502, None, ProviderUnavailable),
        (529, None, ProviderUnavailable),
    ],
)
def test_status_mapping(status: int, code: str | None, expected: type[CourierError]) -> None:
    exc = _status_error(status, {"error": {"message": "nope", "code": code}})
    error = map_sdk_error(exc, provider="openai", secrets=())
    assert type(error) is expected
    assert error.status_code == status


def test_error_messages_never_carry_the_key() -> None:
    body = {"error": {"message": f"Incorrect API key provided: {OPENAI_KEY}. Or sk-abcdef123456"}}
    error = map_sdk_error(_status_error(401, body), provider="openai", secrets=(OPENAI_KEY,))
    assert isinstance(error, AuthenticationFailed)
    assert OPENAI_KEY not in str(error) and "sk-abcdef123456" not in error.message
