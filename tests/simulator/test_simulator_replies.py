"""The provider simulator's answers, read through the official openai and anthropic SDKs."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import httpx
import openai

from tests.support.sim_requests import ANTHROPIC_TOOL, KEY, USER, WEATHER_TOOL
from tests.support.simulator import SimulatorHandle

pytest_plugins = ["tests.support.fixtures"]

# --- OpenAI -------------------------------------------------------------------------------


def test_chat_completion_shape_and_usage(oai: openai.OpenAI, sim: SimulatorHandle) -> None:
    completion = oai.chat.completions.create(model="gpt-4o-mini", messages=USER)
    choice = completion.choices[0]
    assert completion.object == "chat.completion"
    assert completion.id.startswith("chatcmpl-")
    assert completion.model == "gpt-4o-mini"
    assert choice.finish_reason == "stop"
    assert choice.message.role == "assistant"
    words = (choice.message.content or "").split()
    assert 10 <= len(words) <= 40
    assert completion.usage is not None
    assert completion.usage.completion_tokens == len(words)
    assert completion.usage.prompt_tokens == -(-len(USER[0]["content"]) // 4)
    assert completion.usage.total_tokens == (
        completion.usage.prompt_tokens + completion.usage.completion_tokens
    )
    [entry] = sim.log()
    assert entry["status"] == 200
    assert entry["key_suffix"] == "-key"
    assert entry["prompt"] == USER[0]["content"]
    assert entry["model"] == "gpt-4o-mini"
    assert entry["output_tokens"] == len(words)
    assert entry["finished"] >= entry["started"]


def test_chat_is_deterministic(oai: openai.OpenAI) -> None:
    def ask(text: str) -> str | None:
        reply = oai.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": text}]
        )
        return reply.choices[0].message.content

    assert ask("same question") == ask("same question")
    assert ask("same question") != ask("another question")


def test_chat_stream_matches_plain_answer(oai: openai.OpenAI) -> None:
    plain = oai.chat.completions.create(model="gpt-4o-mini", messages=USER)
    stream = oai.chat.completions.create(
        model="gpt-4o-mini",
        messages=USER,
        stream=True,
        stream_options={"include_usage": True},
    )
    parts: list[str] = []
    finish = None
    usage = None
    for chunk in stream:
        assert chunk.object == "chat.completion.chunk"
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            parts.append(choice.delta.content or "")
            finish = choice.finish_reason or finish
    assert "".join(parts) == plain.choices[0].message.content
    assert finish == "stop"
    assert usage is not None and plain.usage is not None
    assert usage.completion_tokens == plain.usage.completion_tokens


def test_max_tokens_gives_length(oai: openai.OpenAI) -> None:
    for param in ("max_tokens", "max_completion_tokens"):
        kw: dict[str, Any] = {param: 3}
        reply = oai.chat.completions.create(model="gpt-4o-mini", messages=USER, **kw)
        assert reply.choices[0].finish_reason == "length"
        assert len((reply.choices[0].message.content or "").split()) == 3
        assert reply.usage is not None and reply.usage.completion_tokens == 3


def test_stop_sequence_cuts_reply(oai: openai.OpenAI, claude: anthropic.Anthropic) -> None:
    full = oai.chat.completions.create(model="m", messages=USER).choices[0].message.content
    assert full
    word = full.split()[4]
    cut = oai.chat.completions.create(model="m", messages=USER, stop=[word])
    assert cut.choices[0].message.content == full[: full.find(word)]
    assert cut.choices[0].finish_reason == "stop"

    kw: dict[str, Any] = {"model": "claude-x", "max_tokens": 100, "messages": USER}
    block = claude.messages.create(**kw).content[0]
    assert block.type == "text"
    word = block.text.split()[4]
    message = claude.messages.create(**kw, stop_sequences=[word])
    assert message.stop_reason == "stop_sequence"
    assert message.stop_sequence == word
    assert message.content[0].type == "text"
    assert message.content[0].text == block.text[: block.text.find(word)]


def test_content_filter(oai: openai.OpenAI, claude: anthropic.Anthropic) -> None:
    bad = [{"role": "user", "content": "please [[content_filter]] this"}]
    reply = oai.chat.completions.create(model="gpt-4o-mini", messages=bad)
    assert reply.choices[0].finish_reason == "content_filter"
    assert not reply.choices[0].message.content
    message = claude.messages.create(model="claude-x", max_tokens=50, messages=bad)
    assert message.stop_reason == "refusal"


def test_openai_tools(oai: openai.OpenAI) -> None:
    first = oai.chat.completions.create(model="gpt-4o", messages=USER, tools=[WEATHER_TOOL])
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    [call] = choice.message.tool_calls or []
    assert call.type == "function"
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "x"}
    history = [
        *USER,
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
    ]
    second = oai.chat.completions.create(model="gpt-4o", messages=history, tools=[WEATHER_TOOL])
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.content

    streamed = oai.chat.completions.create(
        model="gpt-4o",
        messages=USER,
        tools=[WEATHER_TOOL],
        stream=True,
    )
    arguments = ""
    finish = None
    for chunk in streamed:
        for c in chunk.choices:
            for tc in c.delta.tool_calls or []:
                arguments += (tc.function.arguments or "") if tc.function else ""
            finish = c.finish_reason or finish
    assert json.loads(arguments) == {"city": "x"}
    assert finish == "tool_calls"


def test_embeddings(oai: openai.OpenAI) -> None:
    result = oai.embeddings.create(model="text-embedding-3-small", input=["alpha", "beta"])
    assert [d.index for d in result.data] == [0, 1]
    alpha, beta = (d.embedding for d in result.data)
    assert len(alpha) == 16 and alpha != beta
    assert abs(sum(v * v for v in alpha) - 1.0) < 1e-4
    assert result.usage.prompt_tokens == 3  # ceil(5/4) + ceil(4/4)
    again = oai.embeddings.create(
        model="text-embedding-3-small", input="alpha", encoding_format="float", dimensions=16
    )
    assert again.data[0].embedding == alpha  # base64 (SDK default) and float agree exactly
    small = oai.embeddings.create(model="text-embedding-3-small", input="alpha", dimensions=8)
    assert len(small.data[0].embedding) == 8


# --- Anthropic ----------------------------------------------------------------------------


def test_anthropic_message_and_stream(claude: anthropic.Anthropic) -> None:
    kw: dict[str, Any] = {"model": "claude-sonnet-4", "max_tokens": 200, "messages": USER}
    message = claude.messages.create(**kw, system="Be brief.")
    assert message.type == "message" and message.role == "assistant"
    assert message.id.startswith("msg_")
    assert message.model == "claude-sonnet-4"
    assert message.stop_reason == "end_turn"
    [block] = message.content
    assert block.type == "text"
    assert message.usage.output_tokens == len(block.text.split())
    assert message.usage.input_tokens == -(-(len("Be brief.") + 1 + len(USER[0]["content"])) // 4)
    assert claude.messages.create(**kw, system="Be brief.").content == message.content

    with claude.messages.stream(**kw, system="Be brief.") as stream:
        streamed_text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert streamed_text == block.text
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == message.usage.output_tokens
    assert final.usage.input_tokens == message.usage.input_tokens

    events = [e.type for e in claude.messages.create(**kw, stream=True)]
    assert events[0] == "message_start" and events[-1] == "message_stop"
    for name in ("content_block_start", "content_block_delta", "content_block_stop"):
        assert name in events
    assert "message_delta" in events


def test_anthropic_max_tokens(claude: anthropic.Anthropic, sim: SimulatorHandle) -> None:
    message = claude.messages.create(model="claude-x", max_tokens=2, messages=USER)
    assert message.stop_reason == "max_tokens"
    assert message.usage.output_tokens == 2
    missing = httpx.post(
        f"{sim.anthropic_base_url}/v1/messages",
        headers={"x-api-key": KEY},
        json={"model": "claude-x", "messages": USER},
    )
    assert missing.status_code == 400
    assert missing.json()["type"] == "error"
    assert missing.json()["error"]["type"] == "invalid_request_error"


def test_anthropic_tools(claude: anthropic.Anthropic) -> None:
    first = claude.messages.create(
        model="claude-x", max_tokens=100, messages=USER, tools=[ANTHROPIC_TOOL]
    )
    assert first.stop_reason == "tool_use"
    [block] = first.content
    assert block.type == "tool_use"
    assert block.name == "get_weather" and block.input == {"city": "x"}
    assert block.id.startswith("toolu_")
    history = [
        *USER,
        {"role": "assistant", "content": [block.model_dump()]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": block.id, "content": "sunny"}],
        },
    ]
    second = claude.messages.create(
        model="claude-x", max_tokens=100, messages=history, tools=[ANTHROPIC_TOOL]
    )
    assert second.stop_reason == "end_turn"
    assert second.content[0].type == "text"

    with claude.messages.stream(
        model="claude-x", max_tokens=100, messages=USER, tools=[ANTHROPIC_TOOL]
    ) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    assert final.content[0].type == "tool_use" and final.content[0].input == {"city": "x"}


# --- Auth, faults and rate limits ---------------------------------------------------------
