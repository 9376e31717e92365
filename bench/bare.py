"""A bare SDK call's CPU: the comparator for the worker's CPU per job.

The calls run in a fresh interpreter (``python -m bench.bare BASE_URL CALLS``), not in the
bench process: ``process_time`` there would also count the bench's own threads, and its heap
(every job of the matrix so far) would make each garbage collection dearer than a bare
caller's.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import openai
from openai.types.chat import ChatCompletionMessageParam

from bench.harness import Simulator, percentile


@dataclass
class BareSdk:
    calls: int
    median_ms: float
    p10_ms: float
    p90_ms: float
    mean_ms: float  # all the calls' CPU ÷ calls, as the worker's is measured


@dataclass
class CpuRep:
    """One worker cell between two bare runs: the machine's speed drifts (other tenants),
    so each cell is compared with the bare calls made just before and just after it."""

    bare_before_ms: float
    worker_ms: float
    bare_after_ms: float
    # The same cell with Celery's consumer taking the job messages (COURIER_WORKER_INTAKE=false)
    celery_consumer_ms: float | None = None

    @property
    def bare_ms(self) -> float:
        return (self.bare_before_ms + self.bare_after_ms) / 2

    @property
    def ratio(self) -> float:
        return self.worker_ms / self.bare_ms


@dataclass
class CpuComparison:
    jobs: int
    calls: int
    reps: list[CpuRep]

    @property
    def median_ratio(self) -> float:
        return statistics.median(rep.ratio for rep in self.reps)

    @property
    def median_intake_gain(self) -> float | None:
        """Median of worker CPU with the intake ÷ with Celery's consumer, cell by cell."""
        pairs = [r.worker_ms / r.celery_consumer_ms for r in self.reps if r.celery_consumer_ms]
        return statistics.median(pairs) if pairs else None


def bare_sdk_cpu(sim: Simulator, calls: int) -> BareSdk:
    """``chat.completions.create`` in a loop at 0 s latency, in a child interpreter."""
    sim.set_latency(0)
    done = subprocess.run(
        [sys.executable, "-m", "bench.bare", sim.handle.openai_base_url, str(calls)],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    return BareSdk(**json.loads(done.stdout))


def measure(base_url: str, calls: int) -> BareSdk:
    client = openai.OpenAI(base_url=base_url, api_key="sim-key", timeout=30, max_retries=0)
    messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": "bare sdk call"}]
    for _ in range(20):
        client.chat.completions.create(model="gpt-4o-mini", messages=messages, max_tokens=50)
    cpu: list[float] = []
    total_before = time.process_time()
    for i in range(calls):
        messages = [{"role": "user", "content": f"bare sdk call {i}"}]
        before = time.process_time()
        client.chat.completions.create(model="gpt-4o-mini", messages=messages, max_tokens=50)
        cpu.append((time.process_time() - before) * 1000)
    mean = (time.process_time() - total_before) * 1000 / calls
    client.close()
    return BareSdk(calls, statistics.median(cpu), percentile(cpu, 10), percentile(cpu, 90), mean)


def compare_cpu(
    sim: Simulator,
    calls: int,
    jobs: int,
    reps: int,
    worker_cpu_ms: Callable[[dict[str, str]], float | None],
) -> CpuComparison:
    """``reps`` pairs of worker cells (the shipped worker, then the same with Celery's consumer
    taking the jobs), each pair between two bare runs (the runs in between are shared)."""
    comparison = CpuComparison(jobs, calls, [])
    before = bare_sdk_cpu(sim, calls).mean_ms
    for rep in range(reps):
        worker = worker_cpu_ms({})
        celery_consumer = worker_cpu_ms({"COURIER_WORKER_INTAKE": "false"})
        after = bare_sdk_cpu(sim, calls).mean_ms
        if worker is not None:
            comparison.reps.append(CpuRep(before, worker, after, celery_consumer))
            print(
                f"cpu rep {rep + 1}: bare {before:.2f} / {after:.2f} ms, worker {worker:.2f} ms "
                f"per job: {comparison.reps[-1].ratio:.2f}x (Celery's consumer: "
                f"{celery_consumer or 0:.2f} ms)",
                flush=True,
            )
        before = after
    return comparison


if __name__ == "__main__":
    print(json.dumps(asdict(measure(sys.argv[1], int(sys.argv[2])))))
