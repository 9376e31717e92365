"""The simulator's fault mix and its "down for N seconds, then recover" switch."""

from __future__ import annotations

import time
from collections import Counter

import httpx
import pytest

from tests.support.sim_requests import KEY, USER
from tests.support.simulator import SimulatorHandle


def chat(sim: SimulatorHandle, model: str = "m") -> int:
    response = httpx.post(
        f"{sim.openai_base_url}/chat/completions",
        json={"model": model, "messages": USER},
        headers={"Authorization": f"Bearer {KEY}"},
        timeout=10,
    )
    return response.status_code


def test_fault_mix_injects_each_status_at_its_share(sim: SimulatorHandle) -> None:
    config = sim.configure(fault_mix={"429": 0.15, "500": 0.10, "503": 0.05}, seed=7)
    assert config["fault_mix"] == {"429": 0.15, "500": 0.1, "503": 0.05}
    counts = Counter(chat(sim) for _ in range(400))
    assert set(counts) <= {200, 429, 500, 503}
    # Seeded dice, so these are exact for the seed; loose bounds say what they mean.
    assert 40 <= counts[429] <= 80 and 25 <= counts[500] <= 60 and 8 <= counts[503] <= 35
    assert 230 <= counts[200] <= 320


def test_fault_mix_is_checked(sim: SimulatorHandle) -> None:
    for bad in ({"429": 0.8, "500": 0.5}, {"200x": 0.1}, {"700": 0.1}, "429"):
        response = httpx.post(f"{sim.url}/_sim/config", json={"fault_mix": bad})
        assert response.status_code == 400, bad


def test_outage_answers_503_then_recovers_by_itself(sim: SimulatorHandle) -> None:
    sim.outage(1.0)
    assert httpx.get(f"{sim.url}/_sim/outage").json()["down"] is True
    assert [chat(sim) for _ in range(3)] == [503, 503, 503]
    time.sleep(1.1)
    assert chat(sim) == 200
    assert httpx.get(f"{sim.url}/_sim/outage").json()["down"] is False
    assert [e["status"] for e in sim.log()] == [503, 503, 503, 200]


def test_outage_of_one_model_and_early_recovery(sim: SimulatorHandle) -> None:
    sim.outage(60, status=500, match="down-model")
    assert chat(sim, "down-model") == 500
    assert chat(sim, "other-model") == 200
    sim.recover()
    assert chat(sim, "down-model") == 200


@pytest.mark.parametrize("body", [{"seconds": 0}, {"seconds": 5, "status": 200}, {"x": 1}])
def test_outage_is_checked(sim: SimulatorHandle, body: dict[str, object]) -> None:
    assert httpx.post(f"{sim.url}/_sim/outage", json=body).status_code == 400
