"""Shared fixtures: a real Redis database per test run, and a real provider simulator."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import redis

from tests.support.procs import free_port, python_module, wait_http
from tests.support.simulator import SimulatorHandle

REDIS_HOST = os.environ.get("COURIER_TEST_REDIS_HOST", "127.0.0.1")
REDIS_PORT = int(os.environ.get("COURIER_TEST_REDIS_PORT", "6379"))
LOCK_KEY = "courier-test:db-lock"

# Fixtures that test modules also import helpers from (registered here, before those imports).
pytest_plugins = ["tests.support.ratelimit"]


def _claim_redis_db() -> int:
    """Claim a DB number no other concurrent test run is using (1..15), and flush it."""
    for db in range(1, 16):
        client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=db)
        if client.set(LOCK_KEY, os.getpid(), nx=True, ex=3600):
            for key in client.scan_iter(count=1000):
                if key != LOCK_KEY.encode():
                    client.delete(key)
            client.close()
            return db
        client.close()
    raise RuntimeError("no free Redis DB for tests (1..15 all claimed)")


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    db = _claim_redis_db()
    yield f"redis://{REDIS_HOST}:{REDIS_PORT}/{db}"
    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=db)
    client.flushdb()
    client.close()


@pytest.fixture()
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture(scope="session")
def simulator() -> Iterator[SimulatorHandle]:
    """One simulator server for the session; each test that uses it starts from a reset."""
    port = free_port()
    proc = python_module("simulator", "--port", str(port), "--latency", "0", name="sim")
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/_sim/health")
    except TimeoutError:
        proc.stop()
        raise RuntimeError(f"simulator did not start:\n{proc.output()}") from None
    handle = SimulatorHandle(url)
    yield handle
    proc.stop()


@pytest.fixture()
def sim(simulator: SimulatorHandle) -> SimulatorHandle:
    simulator.reset()
    return simulator
