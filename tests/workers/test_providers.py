"""Provider adapters against the simulator (a real server) through the official SDKs: results,
tool round trips, every error class, rate-limit headers and client reuse. The pure mapping
functions are tested in ``test_provider_mapping.py``."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from core.errors import (
    AuthenticationFailed,
    CourierError,
    InvalidRequest,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
)
from tests.support.procs import free_port
from tests.support.simulator import SimulatorHandle
from workers.providers import get_provider, register_provider, reset_providers, resolve_model
from workers.providers.anthropic_adapter import AnthropicProvider
from workers.providers.base import Provider
from workers.providers.openai_adapter import OpenAIProvider

OPENAI_KEY = "sk-test-openai-fake"
ANTHROPIC_KEY = "sk-test-anthropic-fake"
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


# --- real calls against the simulator -------------------------------------------------------


@pytest.fixture()
def oai(sim: SimulatorHandle) -> Iterator[OpenAIProvider]:
    provider = OpenAIProvider(api_key=OPENAI_KEY, base_url=sim.openai_base_url)
    yield provider
    provider.close()


@pytest.fixture()
def ant(sim: SimulatorHandle) -> Iterator[AnthropicProvider]:
    provider = AnthropicProvider(api_key=ANTHROPIC_KEY, base_url=sim.anthropic_base_url)
    yield provider
    provider.close()


@pytest.fixture(params=["openai", "anthropic"])
def provider(request: pytest.FixtureRequest, sim: SimulatorHandle) -> Iterator[Provider]:
    built: OpenAIProvider | AnthropicProvider
    if request.param == "openai":
        built = OpenAIProvider(api_key=OPENAI_KEY, base_url=sim.openai_base_url)
    else:
        built = AnthropicProvider(api_key=ANTHROPIC_KEY, base_url=sim.anthropic_base_url)
    yield built
    built.close()


MODELS = {"openai": "gpt-4o-mini", "anthropic": "claude-haiku-4-5"}


def test_chat_returns_normalized_result(provider: Provider, sim: SimulatorHandle) -> None:
    sim.configure(rpm=1000, tpm=1_000_000)
    model = MODELS[provider.name]
    result = provider.complete(model, HI, timeout=10)
    assert result.model == f"{provider.name}:{model}"
    assert result.finish_reason == "stop"
    assert result.output and result.message == {
        "role": "assistant",
        "content": result.output,
        "tool_calls": [],
    }
    assert result.usage.input_tokens > 0 and result.usage.output_tokens > 0
    assert result.latency_ms >= 0 and result.embeddings is None
    prefix = "x-ratelimit-" if provider.name == "openai" else "anthropic-ratelimit-"
    assert any(name.startswith(prefix) for name in result.rate_limit_headers)
    assert provider.complete(model, HI, timeout=10).output == result.output  # deterministic


def test_small_max_tokens_is_length(provider: Provider) -> None:
    result = provider.complete(MODELS[provider.name], {**HI, "max_tokens": 2}, timeout=10)
    assert result.finish_reason == "length"
    assert result.usage.output_tokens == 2


def test_content_filter_is_a_result(provider: Provider) -> None:
    request = {"messages": [{"role": "user", "content": "tell me [[content_filter]]"}]}
    result = provider.complete(MODELS[provider.name], request, timeout=10)
    assert result.finish_reason == "content_filter"


def test_tool_call_comes_back_in_openai_shape_and_round_trips(provider: Provider) -> None:
    model = MODELS[provider.name]
    ask = {"system": "Use tools.", "messages": [{"role": "user", "content": "Weather in Oslo?"}]}
    first = provider.complete(model, {**ask, "tools": [WEATHER_TOOL]}, timeout=10)
    assert first.finish_reason == "tool_calls"
    assert first.message is not None
    (call,) = first.message["tool_calls"]
    assert call["type"] == "function" and call["id"]
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "x"}

    follow_up = {
        **ask,
        "tools": [WEATHER_TOOL],
        "messages": [
            *ask["messages"],
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": call["id"], "content": "Sunny, 21 C"},
        ],
    }
    second = provider.complete(model, follow_up, timeout=10)
    assert second.finish_reason == "stop" and second.output


def test_anthropic_system_and_stop_reach_the_api(ant: AnthropicProvider) -> None:
    model = MODELS["anthropic"]
    plain = ant.complete(model, HI, timeout=10)
    assert plain.output
    top = ant.complete(model, {**HI, "system": "Be odd."}, timeout=10)
    inline = [{"role": "system", "content": "Be odd."}, *HI["messages"]]
    pulled = ant.complete(model, {**HI, "messages": inline}, timeout=10)
    assert top.output != plain.output  # the simulator seeds replies with `system`
    assert pulled.output == top.output  # a system message becomes the same `system`
    stop_word = plain.output.split()[3]
    cut = ant.complete(model, {**HI, "stop": stop_word}, timeout=10)
    assert cut.finish_reason == "stop"
    assert cut.output == plain.output[: plain.output.index(stop_word)]


def test_openai_embeddings(oai: OpenAIProvider) -> None:
    result = oai.embed("text-embedding-3-small", {"input": ["alpha", "beta"]}, timeout=10)
    assert result.embeddings is not None and len(result.embeddings) == 2
    assert len(result.embeddings[0]) == len(result.embeddings[1]) > 0
    assert result.embeddings[0] != result.embeddings[1]
    assert result.usage.input_tokens > 0 and result.usage.output_tokens == 0
    assert result.model == "openai:text-embedding-3-small" and result.output is None


def test_anthropic_has_no_embeddings(ant: AnthropicProvider) -> None:
    with pytest.raises(InvalidRequest):
        ant.embed("claude-haiku-4-5", {"input": ["a"]}, timeout=5)


ERROR_CASES = [
    (500, ProviderUnavailable),
    (503, ProviderUnavailable),
    (529, ProviderUnavailable),
    (400, InvalidRequest),
    (401, AuthenticationFailed),
    (404, InvalidRequest),
]


@pytest.mark.parametrize(("status", "expected"), ERROR_CASES)
def test_http_errors_map_to_courier_errors(
    provider: Provider, sim: SimulatorHandle, status: int, expected: type[CourierError]
) -> None:
    sim.faults([{"status": status}])
    with pytest.raises(expected) as info:
        provider.complete(MODELS[provider.name], HI, timeout=10)
    assert info.value.status_code == status
    assert str(status) in info.value.message


def test_429_keeps_retry_after_and_headers(provider: Provider, sim: SimulatorHandle) -> None:
    sim.faults([{"status": 429, "retry_after": 1.5}])
    with pytest.raises(RateLimited) as info:
        provider.complete(MODELS[provider.name], HI, timeout=10)
    assert info.value.retry_after == 1.5 and info.value.status_code == 429
    assert info.value.rate_limit_headers["retry-after-ms"] == "1500"
    assert info.value.retryable


def test_rate_limit_past_rpm_carries_rate_headers(
    oai: OpenAIProvider, sim: SimulatorHandle
) -> None:
    sim.configure(rpm=1)
    oai.complete("gpt-4o-mini", HI, timeout=10)
    with pytest.raises(RateLimited) as info:
        oai.complete("gpt-4o-mini", HI, timeout=10)
    assert info.value.retry_after is not None and info.value.retry_after > 0
    assert info.value.rate_limit_headers["x-ratelimit-remaining-requests"] == "0"


def test_slow_answer_is_a_timeout(provider: Provider, sim: SimulatorHandle) -> None:
    sim.faults([{"delay": 5}])
    started = time.monotonic()
    with pytest.raises(ProviderTimeout):
        provider.complete(MODELS[provider.name], HI, timeout=0.5)
    assert time.monotonic() - started < 3


def test_connection_refused_is_unavailable() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    oai = OpenAIProvider(api_key=OPENAI_KEY, base_url=f"{url}/v1")
    ant = AnthropicProvider(api_key=ANTHROPIC_KEY, base_url=url)
    with pytest.raises(ProviderUnavailable):
        oai.complete("gpt-4o-mini", HI, timeout=2)
    with pytest.raises(ProviderUnavailable):
        ant.complete("claude-haiku-4-5", HI, timeout=2)
    oai.close()
    ant.close()


def test_key_never_in_error_messages(provider: Provider, sim: SimulatorHandle) -> None:
    key = OPENAI_KEY if provider.name == "openai" else ANTHROPIC_KEY
    sim.faults([{"status": 401, "message": f"Incorrect API key provided: {key}"}])
    with pytest.raises(AuthenticationFailed) as info:
        provider.complete(MODELS[provider.name], HI, timeout=10)
    assert key not in str(info.value) and key not in repr(info.value.to_record())


def test_missing_key_is_authentication_failed(
    monkeypatch: pytest.MonkeyPatch, sim: SimulatorHandle
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_ADMIN_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_AUTH_TOKEN", raising=False)
    with pytest.raises(AuthenticationFailed):
        OpenAIProvider(base_url=sim.openai_base_url)
    ant = AnthropicProvider(base_url=sim.anthropic_base_url)
    with pytest.raises(AuthenticationFailed):
        ant.complete("claude-haiku-4-5", HI, timeout=5)
    ant.close()


# --- the registry ---------------------------------------------------------------------------


@pytest.fixture()
def env_providers(monkeypatch: pytest.MonkeyPatch, sim: SimulatorHandle) -> Iterator[None]:
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", sim.openai_base_url)
    monkeypatch.setenv("ANTHROPIC_API_KEY", ANTHROPIC_KEY)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", sim.anthropic_base_url)
    reset_providers()
    yield
    reset_providers()


@pytest.mark.usefixtures("env_providers")
def test_get_provider_reuses_one_client_per_process() -> None:
    found: list[Provider] = []
    threads = [
        threading.Thread(target=lambda: found.append(get_provider("openai"))) for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({id(p) for p in found}) == 1
    assert get_provider("openai") is found[0]
    assert get_provider("anthropic") is get_provider("anthropic")
    for qualified in ("openai:gpt-4o-mini", "anthropic:claude-haiku-4-5"):
        provider, model = resolve_model(qualified)
        assert provider.complete(model, HI, timeout=10).model == qualified  # env-configured
    reset_providers()
    assert get_provider("openai") is not found[0]


def test_unknown_provider_is_invalid_request() -> None:
    with pytest.raises(InvalidRequest):
        get_provider("nope")
    with pytest.raises(InvalidRequest):
        resolve_model("gpt-4o-mini")


def test_register_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = AnthropicProvider(api_key=ANTHROPIC_KEY, base_url="http://127.0.0.1:9")
    register_provider("fake", lambda: fake)
    try:
        assert get_provider("fake") is fake
    finally:
        from workers import providers

        monkeypatch.delitem(providers._factories, "fake")
        reset_providers()
