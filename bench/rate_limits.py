"""Cluster-wide rate limits vs Celery's per-worker ``rate_limit``, against the simulator.

``python -m bench.rate_limits [--duration 90] [--latency 0.3] [--oversubscribe 10]``

One simulator enforcing 600 RPM / 100,000 TPM per API key (a true 60 s sliding window),
two gevent worker processes, and a backlog of ``oversubscribe`` times what the limits allow
in ``duration`` seconds. Prompts are sized so that both limits bind together (~140 input
tokens by the simulator's count + 10-40 output tokens, ``max_tokens`` 64).

* **Courier**: ``COURIER_LIMITS={"openai:*": {"rpm": 600, "tpm": 100000}}``; jobs stored and
  enqueued as the API does; the workers share the limiter in Redis.
* **Baseline**: a separate small Celery app (below) whose task calls the simulator through the
  OpenAI SDK with ``rate_limit="300/m"``: the naive split of 600 RPM over two workers. On a 429
  it retries after ``Retry-After`` (what a careful naive task does). It cannot see tokens.
  Run again with a third worker added (``--no-scale-out`` skips it): the split is per worker,
  so the cluster's rate grows with the worker count.

Measured from the simulator's request log over the ``duration`` seconds after the first call:
achieved RPM and TPM (calls answered 200 and their tokens) as % of the limits, and the share
of calls answered 429. Writes ``bench/results-rate-limits.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import openai
import redis
from celery import Celery

from bench.redis_db import LOCK_KEY
from bench.redis_db import claim_db_number as claim_db

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results-rate-limits.md"
RPM, TPM = 600, 100_000
PROMPT_CHARS = 570  # ~142 input tokens: ~167 a call with the reply, so both limits bind
MAX_TOKENS = 64

# ---- the baseline: Celery's own rate_limit, per worker -------------------------------------

baseline = Celery("bench-baseline")
baseline.conf.update(
    broker_url=os.environ.get("BENCH_BROKER_URL", "redis://localhost:6379/0"),
    task_ignore_result=True,
    task_default_queue="bench-baseline",
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
)
_client: openai.OpenAI | None = None


def _sdk() -> openai.OpenAI:
    global _client
    if _client is None:
        _client = openai.OpenAI(max_retries=0, timeout=30)
    return _client


@baseline.task(name="bench.call", bind=True, rate_limit="300/m", max_retries=None)  # type: ignore[untyped-decorator]
def call(self: Any, prompt: str) -> None:
    try:
        _sdk().chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": prompt}],
            max_tokens=MAX_TOKENS,
        )
    except openai.RateLimitError as exc:
        retry_after = float(exc.response.headers.get("retry-after", "1"))
        raise self.retry(countdown=retry_after) from None


# ---- running it ------------------------------------------------------------------------------


def prompt(i: int, run: str) -> str:
    head = f"{run}-{i} "
    return head + ("the courier carries a parcel " * 40)[: PROMPT_CHARS - len(head)]


@dataclass
class Figures:
    name: str
    calls: int
    ok: int
    refused: int
    tokens: int
    rpm_pct: float
    tpm_pct: float
    steady_rpm_pct: float  # from the second minute on (after the first minute's burst)
    steady_tpm_pct: float
    refused_at: list[float]  # seconds after the first call
    per_10s: list[int]  # calls answered 200, per 10 s from the first call

    @property
    def rate_429(self) -> float:
        return 100.0 * self.refused / self.calls if self.calls else 0.0


def measure(name: str, log: list[dict[str, Any]], duration: float) -> Figures:
    api = [c for c in log if c.get("status") in (200, 429)]
    t0 = min(float(c["started"]) for c in api)
    window = [c for c in api if float(c["started"]) < t0 + duration]
    ok = [c for c in window if c["status"] == 200]
    steady = [c for c in ok if float(c["started"]) >= t0 + 60]
    tokens = sum(int(c["input_tokens"]) + int(c["output_tokens"]) for c in ok)
    steady_tokens = sum(int(c["input_tokens"]) + int(c["output_tokens"]) for c in steady)
    minutes, steady_minutes = duration / 60, max(duration - 60, 1e-9) / 60
    return Figures(
        name=name,
        calls=len(window),
        ok=len(ok),
        refused=len(window) - len(ok),
        tokens=tokens,
        rpm_pct=100 * len(ok) / minutes / RPM,
        tpm_pct=100 * tokens / minutes / TPM,
        steady_rpm_pct=100 * len(steady) / steady_minutes / RPM,
        steady_tpm_pct=100 * steady_tokens / steady_minutes / TPM,
        refused_at=[round(float(c["started"]) - t0, 2) for c in window if c["status"] == 429],
        per_10s=[
            sum(1 for c in ok if k * 10 <= float(c["started"]) - t0 < k * 10 + 10)
            for k in range(int(duration // 10))
        ],
    )


def submit_courier(url: str, n: int, run: str) -> None:
    from tests.support.jobs import DirectProducer, chat

    def part(start: int) -> None:
        producer = DirectProducer(url)
        for i in range(start, n, 4):
            producer.submit(
                run, "openai:gpt-4o-mini", request=chat(prompt(i, run), max_tokens=MAX_TOKENS)
            )
        producer.close()

    threads = [threading.Thread(target=part, args=(k,), daemon=True) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def run_courier(url: str, sim: Any, args: argparse.Namespace, backlog: int) -> Figures:
    from tests.support.workers import start_worker

    sim.reset()
    sim.configure(rpm=RPM, tpm=TPM, latency=args.latency)
    started = time.monotonic()
    submit_courier(url, backlog, "courier")  # the whole backlog first: then the workers start
    print(f"courier: {backlog} jobs submitted in {time.monotonic() - started:.1f}s", flush=True)
    limits = json.dumps({"openai:*": {"rpm": RPM, "tpm": TPM}})
    env = {"COURIER_LIMITS": limits, "OPENAI_API_KEY": "bench-courier"}
    workers = [
        start_worker(url, sim, env=env, name=f"bench-courier-{i}", concurrency=100, wait=False)
        for i in range(2)
    ]
    try:
        if args.verbose:
            threading.Thread(target=_sample, args=(url, time.monotonic()), daemon=True).start()
        _sleep_until_window_ends(sim, args.duration)
        return measure("Courier (shared limiter)", sim.log(), args.duration)
    finally:
        _stop(workers)


def run_baseline(
    url: str, sim: Any, args: argparse.Namespace, backlog: int, n_workers: int = 2
) -> Figures:
    from tests.support.procs import Proc

    env = {
        **os.environ,
        "BENCH_BROKER_URL": url,
        "OPENAI_BASE_URL": sim.openai_base_url,
        "OPENAI_API_KEY": "bench-baseline",
    }
    command = [
        *(sys.executable, "-m", "celery", "-A", "bench.rate_limits:baseline", "worker"),
        *("-P", "gevent", "-c", "100", "-Q", "bench-baseline"),
        *("--without-gossip", "--without-mingle", "-l", "WARNING"),
    ]
    sim.reset()
    sim.configure(rpm=RPM, tpm=TPM, latency=args.latency)
    baseline.conf.broker_url = url
    for i in range(backlog):  # the whole backlog first, as for Courier
        call.apply_async(args=[prompt(i, "baseline")])
    workers = [
        Proc([*command, "-n", f"baseline-{i}@bench"], env=env, name=f"bench-baseline-{i}")
        for i in range(n_workers)
    ]
    try:
        _sleep_until_window_ends(sim, args.duration)
        name = f"Celery rate_limit=300/m per worker, {n_workers} workers"
        return measure(name, sim.log(), args.duration)
    finally:
        _stop(workers)


def _sample(url: str, started: float) -> None:
    from core.ratelimit import limiter_state

    client = redis.Redis.from_url(url, decode_responses=True)
    while True:
        for s in limiter_state(client):
            print(
                f"{time.monotonic() - started:6.1f}s remaining={s['remaining_requests']}"
                f"/{s['remaining_tokens']} in_flight={s['in_flight']} room={s['room_in_flight']}"
                f" waiters={s['waiters']['normal']} cooldown={s['cooldown_s']:.1f}"
                f" queue={client.llen('jobs.normal')}",
                flush=True,
            )
        time.sleep(2)


def _sleep_until_window_ends(sim: Any, duration: float) -> None:
    first: float | None = None
    while first is None:
        calls = [float(c["started"]) for c in sim.log() if c.get("status") in (200, 429)]
        first = min(calls) if calls else None
        time.sleep(0.5)
    time.sleep(max(0.0, first + duration + 2 - time.time()))


def _stop(workers: list[Any]) -> None:
    import signal

    for proc in workers:
        proc.signal(signal.SIGKILL)  # the backlog is thrown away: no warm shutdown needed
    for proc in workers:
        proc.stop()


def write_results(args: argparse.Namespace, backlog: int, rows: list[Figures]) -> str:
    lines = [
        "# Rate limits: Courier's shared limiter vs Celery's per-worker rate_limit",
        "",
        f"`python -m bench.rate_limits --duration {args.duration:g} --latency {args.latency:g} "
        f"--oversubscribe {args.oversubscribe:g}` on {datetime.now(UTC):%Y-%m-%d}, "
        f"{os.cpu_count()} cores (shared), Python {platform.python_version()}.",
        "",
        f"Simulator: {RPM} RPM / {TPM:,} TPM per API key (60 s sliding window), "
        f"{args.latency:g} s latency. Two gevent workers (-c 100; three in the scale-out row). "
        f"Backlog: {backlog:,} jobs "
        f"({args.oversubscribe:g}x what the limits allow in {args.duration:g} s); "
        f"~{PROMPT_CHARS // 4} input tokens + 10-40 output tokens a call, max_tokens {MAX_TOKENS}.",
        "Measured from the simulator's log over the first "
        f"{args.duration:g} s after the first call. 'Steady' = from the second minute on.",
        "",
        "| run | calls | 200 | 429 | 429 rate | RPM % of limit | TPM % of limit "
        "| steady RPM % | steady TPM % |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for f in rows:
        lines.append(
            f"| {f.name} | {f.calls:,} | {f.ok:,} | {f.refused:,} | {f.rate_429:.2f} % "
            f"| {f.rpm_pct:.1f} % | {f.tpm_pct:.1f} % | {f.steady_rpm_pct:.1f} % "
            f"| {f.steady_tpm_pct:.1f} % |"
        )
    lines += [
        "",
        "Calls answered 200 per 10 s, and when the 429s came (s after the first call):",
        "",
    ]
    for f in rows:
        times = ", ".join(f"{t:g}" for t in f.refused_at[:6])
        more = f" and {len(f.refused_at) - 6} more" if len(f.refused_at) > 6 else ""
        lines.append(f"- {f.name}: {f.per_10s}; 429 at [{times}]{more}")
    lines += [
        "",
        "Targets for Courier: RPM/TPM >= 97 % of the limit, 429 rate <= 0.1 %.",
        "",
        "Courier refills at 99 % of the limit (a 1 % margin against the provider's own window).",
        "Its first minute's burst takes the whole minute's budget at once; the next call the",
        "bucket allows meets the simulator's still-full sliding window (the one 429), and every",
        "worker pauses until the window slides, then runs at the rate. Celery's per-worker",
        "limit never bursts and matches the limit only while exactly two workers run: with a",
        "third, the cluster asks for 900 RPM and the provider answers 429s.",
        "",
    ]
    text = "\n".join(lines)
    RESULTS.write_text(text)
    return text


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--duration", type=float, default=90.0, help="seconds measured (>= 60)")
    parser.add_argument("--latency", type=float, default=0.3)
    parser.add_argument("--oversubscribe", type=float, default=10.0)
    parser.add_argument(
        "--redis-host", default=os.environ.get("COURIER_TEST_REDIS_HOST", "127.0.0.1")
    )
    parser.add_argument("--redis-port", type=int, default=6379)
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("--verbose", action="store_true", help="print the limiter's state")
    parser.add_argument(
        "--no-scale-out",
        dest="scale_out",
        action="store_false",
        help="skip the baseline run with a third worker added",
    )
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from tests.support.procs import free_port, python_module, wait_http
    from tests.support.simulator import SimulatorHandle

    backlog = int(args.oversubscribe * RPM * args.duration / 60)
    db = claim_db(args.redis_host, args.redis_port)
    url = f"redis://{args.redis_host}:{args.redis_port}/{db}"
    port = free_port()
    sim_proc = python_module("simulator", "--port", str(port), name="bench-sim")
    rows: list[Figures] = []
    try:
        wait_http(f"http://127.0.0.1:{port}/_sim/health")
        sim = SimulatorHandle(f"http://127.0.0.1:{port}")
        rows.append(run_courier(url, sim, args, backlog))
        print(rows[-1])
        if not args.skip_baseline:
            redis.Redis.from_url(url).flushdb()
            redis.Redis.from_url(url).set(LOCK_KEY, os.getpid(), ex=3600)
            rows.append(run_baseline(url, sim, args, backlog))
            print(rows[-1])
        if args.scale_out:  # the naive split after someone adds a worker
            redis.Redis.from_url(url).flushdb()
            redis.Redis.from_url(url).set(LOCK_KEY, os.getpid(), ex=3600)
            rows.append(run_baseline(url, sim, args, backlog, n_workers=3))
            print(rows[-1])
    finally:
        sim_proc.stop()
        client = redis.Redis.from_url(url)
        client.flushdb()
        client.close()
    print(write_results(args, backlog, rows))


if __name__ == "__main__":
    main()
