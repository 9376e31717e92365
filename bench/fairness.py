"""Fair share between tenants, against the provider simulator (``make bench-fairness``).

``python -m bench.fairness [--baseline-ref REF] [--only backlog,weights,tokens,cpu]`` writes
``bench/results-fairness.md``. Every scenario runs one ``courier worker`` (gevent) of this
checkout (*fair*) and, where a baseline makes sense, the same worker of ``REF`` checked out
in a temporary git worktree (*baseline*: the intake before the fair order, ``main`` unless
told), one after the other in the same run, on a DB no one else uses.

1. **backlog**: tenant A has 10,000 jobs queued; the worker (``-c 100``, simulator at 1 s)
   starts on them; 5 s later tenant B submits 20. B's queue wait = started_at - created_at.
2. **weights**: A (weight 3) and B (weight 1) both backlogged (3,000 and 1,500 jobs,
   ``-c 50``, 1 s): the starts of each over one minute (after a 5 s start), and per 10 s.
3. **tokens**: ``openai:*`` limited to 30,000 tokens per minute; A's prompts ~1,000 tokens,
   B's ~100 (``max_tokens`` 16), both backlogged (A 600 jobs, B 3,000), submitted
   interleaved, then with A's queued first: the tokens of the calls each tenant had
   answered from 15 s to 75 s (after the minute's first burst).
4. **cpu**: worker CPU per job, fair against baseline, 2,000 jobs of 4 tenants at 0 s
   latency (``-c 100``), three rounds each, alternating.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis
from celery import Celery

from bench import harness
from bench.budgets import claim_quiet_db, clear
from bench.fairness_report import Results, render
from bench.harness import Simulator, courier_env, percentile, tree_cpu_s, wait_terminal
from config.celery import celery_config
from config.settings import Settings
from core import keys
from core.queues import enqueue_jobs
from core.store import JobStore
from producers.cli import worker_argv
from tests.support.procs import Proc, wait_until

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results-fairness.md"
MODEL = "openai:gpt-4o-mini"


def fields(prompt: str, max_tokens: int = 16) -> dict[str, Any]:
    return {
        "model": MODEL, "kind": "chat", "priority": "normal",
        "request": {"messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens},
        "fallback_models": [], "metadata": {}, "max_attempts": 5, "timeout_s": 60,
    }  # fmt: skip


class Submitter:
    def __init__(self) -> None:
        self.client = redis.Redis.from_url(harness.REDIS_URL, decode_responses=True)
        self.store = JobStore(self.client)
        self.celery = Celery("bench-fairness")
        self.celery.config_from_object(celery_config(Settings(redis_url=harness.REDIS_URL)))

    def submit(
        self, jobs: Sequence[tuple[str, str]], max_tokens: Mapping[str, int] | None = None
    ) -> list[str]:
        """(tenant, prompt) each, stored and enqueued in this order; their ids.
        ``max_tokens``: per tenant (else 16)."""
        asks = max_tokens or {}
        ids: list[str] = []
        for start in range(0, len(jobs), 500):
            for tenant, prompt in jobs[start : start + 500]:
                ids.append(self.store.create(tenant, fields(prompt, asks.get(tenant, 16)))[0])
            enqueue_jobs(self.celery, [(job_id, "normal") for job_id in ids[start:]])
        return ids

    def records(self, ids: Sequence[str]) -> list[dict[str, str]]:
        return [r for r in self.store.get_many(list(ids)) if r]

    def close(self) -> None:
        self.client.close()
        self.celery.close()


@contextmanager
def checkout(ref: str) -> Iterator[Path]:
    """``ref`` of this repository in a temporary worktree."""
    path = Path(tempfile.mkdtemp(prefix="courier-fair-baseline-"))
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(path), ref],
                   check=True, capture_output=True)  # fmt: skip
    try:
        yield path
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(path)],
                       check=False, capture_output=True)  # fmt: skip
        shutil.rmtree(path, ignore_errors=True)


def start_worker(sim: Simulator, source: Path, concurrency: int, **env: str) -> Proc:
    """``courier worker``'s celery command, running the code of ``source``: Celery puts its
    current directory first on ``sys.path``, so the worker starts in ``source``."""
    argv = worker_argv(["-n", f"fair-{time.monotonic_ns()}@%h"], concurrency)
    extra = {"PYTHONPATH": str(source), **env}
    proc = Proc(["env", "-C", str(source), sys.executable, "-m", "celery", *argv],
                env=courier_env(sim, **extra), name="worker")  # fmt: skip
    wait_until(lambda: " ready." in proc.output(), timeout=60)
    return proc


def stop(proc: Proc) -> None:
    proc.stop(timeout=20)
    clear()


def run_for(
    sim: Simulator,
    source: Path,
    jobs: Submitter,
    ids: Sequence[str],
    seconds: float,
    concurrency: int,
    *,
    from_ready: bool = False,
    **env: str,
) -> tuple[float, list[dict[str, str]]]:
    """One worker of ``source`` on the queued ``ids`` for ``seconds`` from its start (or from
    when it was ready), then the jobs' records; (that start, the records)."""
    t0 = time.time()
    worker = start_worker(sim, source, concurrency, **env)
    t0 = time.time() if from_ready else t0
    try:
        time.sleep(max(0.0, t0 + seconds - time.time()))
        return t0, jobs.records(ids)
    finally:
        stop(worker)
        jobs.close()


def run_backlog(sim: Simulator, source: Path) -> list[float]:
    """B's 20 queue waits (s) behind A's 10,000."""
    sim.set_latency(1.0)
    jobs = Submitter()
    jobs.submit([("tenant-a", f"backlog {i}") for i in range(10_000)])
    worker = start_worker(sim, source, 100)
    try:
        time.sleep(5)
        small = jobs.submit([("tenant-b", f"small {i}") for i in range(20)])
        done, _ = wait_terminal(jobs.client, [keys.job(j) for j in small], timeout=300)
        assert done, "tenant B's jobs did not finish"
        waits = [float(r["started_at"]) - float(r["created_at"]) for r in jobs.records(small)]
    finally:
        stop(worker)
        jobs.close()
    return waits


def run_weights(sim: Simulator, source: Path) -> list[tuple[int, int]]:
    """(A's starts, B's starts) in each 10 s of the minute after the first 5 s."""
    sim.set_latency(1.0)
    jobs = Submitter()
    ids = jobs.submit([("tenant-a", f"heavy {i}") for i in range(3000)])
    ids += jobs.submit([("tenant-b", f"light {i}") for i in range(1500)])
    weights = json.dumps({"tenant-a": 3, "tenant-b": 1})
    _, records = run_for(sim, source, jobs, ids, 75, 50, COURIER_TENANT_WEIGHTS=weights)
    starts = sorted((float(r["started_at"]), r["tenant"]) for r in records if r.get("started_at"))
    first = starts[0][0] + 5
    buckets = []
    for i in range(6):
        inside = [t for at, t in starts if first + 10 * i <= at < first + 10 * (i + 1)]
        buckets.append((inside.count("tenant-a"), inside.count("tenant-b")))
    return buckets


def run_tokens(sim: Simulator, source: Path, a_first: bool) -> tuple[int, int, int, int]:
    """(A's tokens, B's tokens, A's calls, B's calls) answered from 15 s to 75 s."""
    sim.set_latency(0.2)
    jobs = Submitter()
    long = [("tenant-a", "long " * 800 + str(i)) for i in range(600)]  # ~1,000 tokens
    short = [("tenant-b", "short " * 66 + str(i)) for i in range(3000)]  # ~100 tokens
    if a_first:
        mixed = long + short
    else:
        mixed = [job for pair in zip(long, short[:600], strict=True) for job in pair]
        mixed += short[600:]
    ids = jobs.submit(mixed)
    limits = json.dumps({"openai:*": {"tpm": 30_000}})
    t0, records = run_for(sim, source, jobs, ids, 80, 1000, from_ready=True, COURIER_LIMITS=limits)
    tokens = {"tenant-a": 0, "tenant-b": 0}
    calls = {"tenant-a": 0, "tenant-b": 0}
    for r in records:
        if r.get("status") == "succeeded" and t0 + 15 <= float(r["finished_at"]) < t0 + 75:
            usage = json.loads(r["result"])["usage"]
            tokens[r["tenant"]] += usage["input_tokens"] + usage["output_tokens"]
            calls[r["tenant"]] += 1
    return tokens["tenant-a"], tokens["tenant-b"], calls["tenant-a"], calls["tenant-b"]


def cpu_round(sim: Simulator, source: Path, round_: int, count: int = 2000) -> float:
    """Worker CPU ms per job for ``count`` jobs of four tenants at 0 s latency."""
    sim.set_latency(0.0)
    jobs = Submitter()
    worker = start_worker(sim, source, 100)
    try:
        warm = jobs.submit([("tenant-w", f"warm {i}") for i in range(200)])
        assert wait_terminal(jobs.client, [keys.job(j) for j in warm], timeout=120)[0]
        before = tree_cpu_s(worker.pid)
        ids = jobs.submit([(f"tenant-{i % 4}", f"cpu {round_} {i}") for i in range(count)])
        done, _ = wait_terminal(jobs.client, [keys.job(j) for j in ids], 600, interval=0.05)
        assert done, "a CPU round did not finish"
        return (tree_cpu_s(worker.pid) - before) * 1000 / count
    finally:
        stop(worker)
        jobs.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--baseline-ref", default=os.environ.get("FAIR_BASELINE_REF", "main"))
    parser.add_argument("--only", default="backlog,weights,tokens,cpu")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    wanted = set(args.only.split(","))
    claim_quiet_db()
    sim = Simulator(0.0)
    sha = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", args.baseline_ref],
                         capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    results = Results(baseline_ref=f"{args.baseline_ref}` (`{sha}")
    try:
        with checkout(args.baseline_ref) as baseline:
            if "backlog" in wanted:
                results.backlog_fair = run_backlog(sim, ROOT)
                print(f"backlog fair: p95 {percentile(results.backlog_fair, 95):.2f} s", flush=True)
                results.backlog_baseline = run_backlog(sim, baseline)
                print(f"backlog baseline: p95 {percentile(results.backlog_baseline, 95):.2f} s")
            if "weights" in wanted:
                results.weights = run_weights(sim, ROOT)
                print(f"weights: {results.weights}", flush=True)
            if "tokens" in wanted:
                for a_first in (False, True):
                    for arm, source in (("fair", ROOT), ("baseline", baseline)):
                        row = run_tokens(sim, source, a_first)
                        results.tokens[(arm, a_first)] = row
                        print(f"tokens {arm} a_first={a_first}: {row}", flush=True)
            if "cpu" in wanted:
                for round_ in range(args.rounds):
                    for arm, source in (("fair", ROOT), ("baseline", baseline))[
                        :: 1 - 2 * (round_ % 2)
                    ]:
                        ms = cpu_round(sim, source, round_)
                        results.cpu[arm].append(ms)
                        print(f"cpu round {round_} {arm}: {ms:.3f} ms/job", flush=True)
    finally:
        sim.stop()
    RESULTS.write_text(render(results))
    print(f"written: {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
