"""Fixtures of the running system (see :mod:`tests.support.stack`).

Use from a test module with ``pytest_plugins = ["tests.support.fixtures"]``.
"""

from __future__ import annotations

from collections.abc import Iterator

import anthropic
import httpx
import openai
import pytest

from tests.support.jobs import DirectProducer
from tests.support.procs import Proc
from tests.support.sim_requests import KEY
from tests.support.simulator import SimulatorHandle
from tests.support.stack import KEY1, KEY2, stack_env_for, start_api, start_worker
from tests.support.workers import flush_queues


@pytest.fixture(scope="session")
def stack_env(redis_url: str, simulator: SimulatorHandle) -> dict[str, str]:
    return stack_env_for(redis_url, simulator)


@pytest.fixture(scope="session")
def api_proc(stack_env: dict[str, str]) -> Iterator[tuple[Proc, str]]:
    proc, url = start_api(stack_env)
    yield proc, url
    proc.stop()


@pytest.fixture(scope="session")
def api_url(api_proc: tuple[Proc, str]) -> str:
    return api_proc[1]


@pytest.fixture(scope="module")
def worker(stack_env: dict[str, str]) -> Iterator[Proc]:
    """A worker for one test module only: other modules count the workers they run."""
    proc = start_worker(stack_env)
    yield proc
    proc.stop(timeout=8)


@pytest.fixture()
def producer(redis_url: str) -> Iterator[DirectProducer]:
    """Jobs stored and enqueued directly, on queues emptied of earlier tests' messages
    (modules that need another kind define their own ``producer``)."""
    flush_queues(redis_url)
    producer = DirectProducer(redis_url)
    yield producer
    producer.close()


@pytest.fixture()
def t1(api_url: str) -> Iterator[httpx.Client]:
    """An HTTP client authenticated as tenant t1."""
    with httpx.Client(
        base_url=api_url, headers={"Authorization": f"Bearer {KEY1}"}, timeout=30
    ) as client:
        yield client


@pytest.fixture()
def t2(api_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=api_url, headers={"Authorization": f"Bearer {KEY2}"}, timeout=30
    ) as client:
        yield client


# ---- SDK clients pointed at the simulator ----------------------------------------------


@pytest.fixture()
def oai(sim: SimulatorHandle) -> Iterator[openai.OpenAI]:
    client = openai.OpenAI(base_url=sim.openai_base_url, api_key=KEY, max_retries=0, timeout=10)
    yield client
    client.close()


@pytest.fixture()
def claude(sim: SimulatorHandle) -> Iterator[anthropic.Anthropic]:
    client = anthropic.Anthropic(
        base_url=sim.anthropic_base_url, api_key=KEY, max_retries=0, timeout=10
    )
    yield client
    client.close()
