"""The streaming bench's CPU cell (:mod:`bench.streaming`): worker CPU per streamed job
against a bare streaming SDK call (:mod:`bench.bare_stream`), run before and after each
cell against the same paced simulator."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import redis

from bench import harness
from bench.harness import Simulator, tree_cpu_s, wait_terminal
from core import keys

HEADERS = {"Authorization": f"Bearer {harness.API_KEY}"}


def submit_streamed(url: str, prompts: Sequence[str]) -> list[str]:
    """Streamed chat jobs, 500 per batch request; their ids in order."""
    ids: list[str] = []
    with httpx.Client(base_url=url, headers=HEADERS, timeout=60) as client:
        for start in range(0, len(prompts), 500):
            jobs = [
                {"model": "openai:gpt-4o-mini", "stream": True,
                 "request": {"messages": [{"role": "user", "content": p}]}}
                for p in prompts[start : start + 500]
            ]  # fmt: skip
            response = client.post("/v1/jobs/batch", json={"jobs": jobs})
            response.raise_for_status()
            ids += [job["id"] for job in response.json()["jobs"]]
    return ids


# ---- 3. worker CPU -----------------------------------------------------------------


@dataclass
class CpuCell:
    bare_before_ms: float
    worker_ms: float
    bare_after_ms: float

    @property
    def ratio(self) -> float:
        return self.worker_ms / ((self.bare_before_ms + self.bare_after_ms) / 2)


def bare_stream_cpu(sim: Simulator, calls: int) -> float:
    done = subprocess.run(
        [sys.executable, "-m", "bench.bare_stream", sim.handle.openai_base_url, str(calls)],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    return float(json.loads(done.stdout)["cpu_ms_per_call"])


def worker_stream_cpu(url: str, worker: Any, jobs: int) -> float:

    client = redis.Redis.from_url(harness.REDIS_URL, decode_responses=True)
    before = tree_cpu_s(worker.pid)
    ids = submit_streamed(url, [f"cpu {i} {uuid.uuid4().hex}" for i in range(jobs)])
    ended, _ = wait_terminal(
        client, [keys.job(job_id) for job_id in ids], timeout=600, interval=0.2
    )
    cpu = tree_cpu_s(worker.pid) - before
    client.close()
    if not ended:
        raise RuntimeError("the CPU cell's jobs did not end")
    return cpu * 1000 / jobs


def compare_cpu(
    sim: Simulator, url: str, worker: Any, jobs: int, tps: float, reps: int
) -> list[CpuCell]:
    sim.handle.reset()
    sim.handle.configure(stream_tps=tps)
    cells = []
    before = bare_stream_cpu(sim, jobs)
    for rep in range(reps):
        worker_ms = worker_stream_cpu(url, worker, jobs)
        after = bare_stream_cpu(sim, jobs)
        cells.append(CpuCell(before, worker_ms, after))
        print(f"cpu rep {rep + 1}: bare {before:.2f}/{after:.2f} ms, worker {worker_ms:.2f} ms "
              f"per job: {cells[-1].ratio:.2f}x", flush=True)  # fmt: skip
        before = after
    return cells
