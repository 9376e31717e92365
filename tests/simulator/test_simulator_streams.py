"""Streamed answers from the simulator: paced at ``stream_tps``, and broken on purpose by
scripted stream faults, as the official SDKs see them."""

from __future__ import annotations

import time

import anthropic
import httpx
import openai
import pytest

from tests.support.simulator import SimulatorHandle

pytest_plugins = ["tests.support.fixtures"]

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "pace me"}]}


def test_stream_is_paced(sim: SimulatorHandle, oai: openai.OpenAI) -> None:
    sim.configure(stream_tps=50, record_stream_times=True)
    started = time.monotonic()
    pieces = [
        chunk.choices[0].delta.content or ""
        for chunk in oai.chat.completions.create(**CHAT, stream=True, max_tokens=20)  # type: ignore[call-overload]
        if chunk.choices
    ]
    elapsed = time.monotonic() - started
    times = sim.log()[-1]["stream_times"]
    assert len(times) >= len(pieces) >= 5
    # n events at 50/s take (n - 1) / 50 s at least: paced, not sent in one write
    assert elapsed >= (len(times) - 1) / 50 * 0.9
    assert times == sorted(times)


def test_stream_faults_only_hit_streams(sim: SimulatorHandle, oai: openai.OpenAI) -> None:
    sim.faults([{"stream_fault": "truncate", "after_chunks": 2}])
    answer = oai.chat.completions.create(**CHAT)  # type: ignore[call-overload]
    assert answer.choices[0].message.content
    assert len(sim.pending_faults()) == 1


def test_truncate_ends_the_body_early(sim: SimulatorHandle, oai: openai.OpenAI) -> None:
    sim.faults([{"stream_fault": "truncate", "after_chunks": 3}])
    chunks = list(oai.chat.completions.create(**CHAT, stream=True))  # type: ignore[call-overload]
    assert len(chunks) == 3
    assert all(c.choices[0].finish_reason is None for c in chunks)


def test_drop_cuts_the_connection(sim: SimulatorHandle, oai: openai.OpenAI) -> None:
    sim.faults([{"stream_fault": "drop", "after_chunks": 2}])
    with pytest.raises((openai.APIConnectionError, httpx.HTTPError)):
        list(oai.chat.completions.create(**CHAT, stream=True))  # type: ignore[call-overload]


def test_malformed_event(sim: SimulatorHandle, claude: anthropic.Anthropic) -> None:
    sim.faults([{"stream_fault": "malformed", "after_chunks": 4}])
    with pytest.raises(ValueError):
        list(
            claude.messages.create(
                model="claude-haiku-4-5",
                max_tokens=50,
                messages=[{"role": "user", "content": "Hi"}],
                stream=True,
            )
        )


def test_stall_needs_a_read_timeout(sim: SimulatorHandle) -> None:
    sim.faults([{"stream_fault": "stall", "after_chunks": 1}])
    client = openai.OpenAI(
        base_url=sim.openai_base_url, api_key="sk-test", max_retries=0, timeout=0.5
    )
    with pytest.raises((openai.APITimeoutError, httpx.TimeoutException)):
        list(client.chat.completions.create(**CHAT, stream=True))  # type: ignore[call-overload]
    client.close()


@pytest.mark.parametrize(
    "fault",
    [{"stream_fault": "boom"}, {"stream_fault": "drop", "after_chunks": -1},
     {"stream_fault": "drop", "status": 500}],
)  # fmt: skip
def test_bad_stream_faults_are_refused(sim: SimulatorHandle, fault: dict[str, object]) -> None:
    response = httpx.post(f"{sim.url}/_sim/faults", json={"faults": [fault]})
    assert response.status_code == 400
