"""The provider simulator's faults and rate limits, seen through the official SDKs."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.support.sim_requests import KEY, USER
from tests.support.simulator import SimulatorHandle

pytest_plugins = ["tests.support.fixtures"]


def test_missing_key_is_401(sim: SimulatorHandle) -> None:
    response = httpx.post(f"{sim.openai_base_url}/chat/completions", json={"model": "m"})
    assert response.status_code == 401
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    assert response.headers["x-request-id"]
    response = httpx.post(f"{sim.anthropic_base_url}/v1/messages", json={"model": "m"})
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "authentication_error"
    assert response.headers["request-id"]


def test_scripted_openai_faults(oai: openai.OpenAI, sim: SimulatorHandle) -> None:
    sim.faults([{"status": 429, "retry_after": 1.5}, {"status": 500}, {"status": 503}])
    sim.faults([{"status": 400}, {"status": 401}])
    with pytest.raises(openai.RateLimitError) as rate:
        oai.chat.completions.create(model="m", messages=USER)
    assert rate.value.response.headers["retry-after"] == "2"
    assert rate.value.response.headers["retry-after-ms"] == "1500"
    with pytest.raises(openai.InternalServerError) as server:
        oai.chat.completions.create(model="m", messages=USER)
    assert server.value.status_code == 500
    with pytest.raises(openai.InternalServerError) as unavailable:
        oai.embeddings.create(model="e", input="x")
    assert unavailable.value.status_code == 503
    with pytest.raises(openai.BadRequestError):
        oai.chat.completions.create(model="m", messages=USER)
    with pytest.raises(openai.AuthenticationError):
        oai.chat.completions.create(model="m", messages=USER)
    assert oai.chat.completions.create(model="m", messages=USER).choices
    assert [e["status"] for e in sim.log()] == [429, 500, 503, 400, 401, 200]


def test_scripted_anthropic_faults(claude: anthropic.Anthropic, sim: SimulatorHandle) -> None:
    sim.faults([{"status": 529}, {"status": 429, "retry_after": 3}], match="special")
    kw: dict[str, Any] = {"model": "claude-x", "max_tokens": 20}
    claude.messages.create(**kw, messages=USER)  # no match: answered normally
    special = [{"role": "user", "content": "a special request"}]
    with pytest.raises(anthropic.OverloadedError) as overloaded:
        claude.messages.create(**kw, messages=special)
    assert overloaded.value.body["error"]["type"] == "overloaded_error"
    with pytest.raises(anthropic.RateLimitError) as rate:
        claude.messages.create(**kw, messages=special)
    assert rate.value.response.headers["retry-after"] == "3"
    assert claude.messages.create(**kw, messages=special).content


def test_delay_fault_times_out_the_sdk(sim: SimulatorHandle) -> None:
    sim.faults([{"delay": 30}])
    # Its own key: the abandoned request must not count in another test's rate window.
    client = openai.OpenAI(
        base_url=sim.openai_base_url, api_key="delay-key", max_retries=0, timeout=0.5
    )
    with pytest.raises(openai.APITimeoutError):
        client.chat.completions.create(model="m", messages=USER)
    client.close()


def test_error_injection_is_seeded(sim: SimulatorHandle) -> None:
    def roll() -> list[int | str]:
        outcomes: list[int | str] = []
        for _ in range(12):
            try:
                response = httpx.post(
                    f"{sim.openai_base_url}/chat/completions",
                    headers={"authorization": "Bearer dice-key"},
                    json={"model": "m", "messages": USER},
                    timeout=0.3,
                )
                outcomes.append(response.status_code)
            except httpx.TimeoutException:
                outcomes.append("slow")
        return outcomes

    sim.configure(error_rate=1.0, seed=7)
    first = roll()
    sim.configure(seed=8)
    sim.configure(seed=7)
    assert roll() == first
    assert set(first) <= {429, 500, 503, "slow"} and len(set(first)) >= 3
    assert Counter(first)[200] == 0


def test_rate_limit_headers(
    oai: openai.OpenAI, claude: anthropic.Anthropic, sim: SimulatorHandle
) -> None:
    plain = oai.chat.completions.with_raw_response.create(model="m", messages=USER)
    assert "x-ratelimit-limit-requests" not in plain.headers  # unlimited: no headers
    sim.configure(rpm=100, tpm=100_000)
    raw = oai.chat.completions.with_raw_response.create(model="m", messages=USER)
    usage = raw.parse().usage
    assert usage is not None
    headers = raw.headers
    assert headers["x-ratelimit-limit-requests"] == "100"
    assert headers["x-ratelimit-remaining-requests"] == "99"
    assert headers["x-ratelimit-limit-tokens"] == "100000"
    assert int(headers["x-ratelimit-remaining-tokens"]) == 100_000 - usage.total_tokens
    assert headers["x-ratelimit-reset-requests"].endswith("s")
    assert headers["x-ratelimit-reset-tokens"].endswith("s")

    sim.faults([{"status": 503}])
    with pytest.raises(openai.InternalServerError) as unavailable:
        oai.chat.completions.create(model="m", messages=USER)
    assert unavailable.value.response.headers["x-ratelimit-remaining-requests"] == "99"

    message = claude.messages.with_raw_response.create(model="c", max_tokens=50, messages=USER)
    h = message.headers
    assert h["anthropic-ratelimit-requests-limit"] == "100"
    assert h["anthropic-ratelimit-requests-remaining"] == "98"  # same key, same window
    assert h["anthropic-ratelimit-requests-reset"].endswith("Z")
    for family in ("tokens", "input-tokens", "output-tokens"):
        assert h[f"anthropic-ratelimit-{family}-limit"] == "100000"
        assert int(h[f"anthropic-ratelimit-{family}-remaining"]) < 100_000


def test_token_limit(oai: openai.OpenAI, sim: SimulatorHandle) -> None:
    sim.configure(tpm=60)
    hi = [{"role": "user", "content": "hi"}]  # 1 input token + 10 output tokens
    for _ in range(5):
        oai.chat.completions.create(model="m", messages=hi, max_tokens=10)
    with pytest.raises(openai.RateLimitError) as exc:
        oai.chat.completions.create(model="m", messages=hi, max_tokens=10)
    assert exc.value.response.headers["x-ratelimit-remaining-tokens"] == "5"
    assert 0 < int(exc.value.response.headers["retry-after"]) <= 60
    assert exc.value.body["type"] == "tokens"


def test_rpm_burst_admits_exactly_the_limit(sim: SimulatorHandle) -> None:
    sim.configure(rpm=60, latency=1)

    async def burst() -> list[Any]:
        client = openai.AsyncOpenAI(
            base_url=sim.openai_base_url, api_key=KEY, max_retries=0, timeout=30
        )
        try:
            calls = [client.chat.completions.create(model="m", messages=USER) for _ in range(100)]
            return await asyncio.gather(*calls, return_exceptions=True)
        finally:
            await client.close()

    results = asyncio.run(burst())
    limited = [r for r in results if isinstance(r, openai.RateLimitError)]
    answered = [r for r in results if not isinstance(r, BaseException)]
    assert len(answered) == 60
    assert len(limited) == 40
    for error in limited:
        retry_after = int(error.response.headers["retry-after"])
        assert 0 < retry_after <= 60
        assert error.response.headers["x-ratelimit-remaining-requests"] == "0"
    assert Counter(e["status"] for e in sim.log()) == {200: 60, 429: 40}


def test_admin_api(sim: SimulatorHandle, oai: openai.OpenAI) -> None:
    admin = f"{sim.url}/_sim"
    assert httpx.get(f"{admin}/health").json() == {"ok": True}
    assert httpx.post(f"{admin}/config", json={"rpm": -1}).status_code == 400
    assert httpx.post(f"{admin}/config", json={"error_rate": 2}).status_code == 400
    assert httpx.post(f"{admin}/config", json={"bogus": 1}).status_code == 400
    assert httpx.post(f"{admin}/faults", json={"faults": [{"status": 200}]}).status_code == 400
    assert sim.configure(latency=0.01)["latency"] == 0.01
    sim.faults([{"status": 500}], match="never-matches")
    assert len(httpx.get(f"{admin}/faults").json()["faults"]) == 1
    sim.clear_faults()
    assert httpx.get(f"{admin}/faults").json()["faults"] == []
    for i in range(3):
        oai.chat.completions.create(model="m", messages=[{"role": "user", "content": f"q{i}"}])
    assert [e["prompt"] for e in sim.log(since=1)] == ["q1", "q2"]
    sim.reset()
    assert sim.log() == []
    assert httpx.get(f"{admin}/config").json()["latency"] == 0
