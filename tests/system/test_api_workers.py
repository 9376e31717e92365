"""``courier api --workers N``: several API processes on one port, their request counters
summed in every process's /metrics (Prometheus multiprocess mode)."""

from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from tests.support.procs import free_port, python_module, wait_http
from tests.support.simulator import SimulatorHandle
from tests.support.stack import KEY1, chat_body, stack_env_for

SUBMITTED = re.compile(
    r'courier_api_requests_total\{method="POST",route="/v1/jobs",status="202"\} ([\d.]+)'
)


def test_workers_share_the_port_and_sum_their_counts(
    tmp_path: Path, redis_url: str, simulator: SimulatorHandle
) -> None:
    left_over = tmp_path / "counter_1.db"
    left_over.write_bytes(b"counts of an earlier run")
    port = free_port()
    env = {**stack_env_for(redis_url, simulator), "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    proc = python_module(
        "producers.cli", "api", "--workers", "2", "--port", str(port), "--log-level",
        "warning", env=env, name="api-workers",
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/healthz", timeout=60)
        assert not left_over.exists()  # emptied at start: no counts of another run

        def submit(_: int) -> int:  # a new connection each: the kernel spreads them
            auth = {"Authorization": f"Bearer {KEY1}"}
            return httpx.post(f"{url}/v1/jobs", json=chat_body("w"), headers=auth).status_code

        def writers() -> set[str]:
            return {p.name.split("_")[-1] for p in tmp_path.glob("counter_*.db")}

        # /healthz answers once one process is up; the other may still be starting, and
        # until it is the first takes every connection. So send bursts until both answered.
        submitted = 0
        deadline = time.monotonic() + 60
        with ThreadPoolExecutor(8) as pool:
            while len(writers()) < 2 and time.monotonic() < deadline:
                assert set(pool.map(submit, range(20))) == {202}
                submitted += 20
        assert len(writers()) == 2, writers()  # both processes answered some
        for _ in range(4):  # whichever process answers the scrape shows every count
            found = SUBMITTED.search(httpx.get(f"{url}/metrics").text)
            assert found and float(found.group(1)) == submitted
    finally:
        proc.stop()
