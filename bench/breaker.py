"""Circuit breakers under faults: the rate breaker, the streak breaker and none, in one run.

``python -m bench.breaker [--jobs 500] [--seeds 1] [--rate 15] [--outage 20]
[--breakers "off;streak;rate;rate[window_s=10]"]``
(``make bench-breaker``)

One simulator (0.2 s latency), one gevent worker (``-c 200``) per run, each run on a fresh
Redis database; the breakers are the worker's ``COURIER_BREAKER``:

* ``off``: no breaker (the baseline);
* ``streak``: the breaker before 2026-12-07 with its defaults (5 consecutive retryable
  failures, 429s included, open it for 30 s);
* ``rate``: the rate breaker with the defaults (``config.settings``).

Scenarios, each run once per breaker:

* **random faults**: the simulator answers 15 % 429, 10 % 500, 5 % 503 at random (seeded:
  every breaker meets the same dice), ``--jobs`` jobs submitted at once, ``max_attempts`` 8;
  once per seed.
* **outage**: ``--rate`` jobs a second for ``--duration`` seconds; ``--outage-at`` seconds in,
  the provider answers every call 503 for ``--outage`` seconds, then recovers.

Measured from the job records (completion = ``finished_at - created_at``) and the
simulator's request log: p50/p95/p99 completion, calls per job, calls sent to the provider
while it was down, and, after it recovered, when calls were answered again (the first 200)
and when the jobs submitted before the recovery had all finished. Writes
``bench/results-breaker.md``.
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results-breaker.md"
MODEL = "openai:gpt-4o-mini"
FAULT_MIX = {"429": 0.15, "500": 0.10, "503": 0.05}
LATENCY_S = 0.2
MAX_ATTEMPTS = 8
BREAKERS: dict[str, dict[str, str]] = {
    "off": {"COURIER_BREAKER": "off"},
    "streak": {
        "COURIER_BREAKER": "streak",
        "COURIER_BREAKER_THRESHOLD": "5",
        "COURIER_BREAKER_COOLDOWN_S": "30",
    },
    "rate": {"COURIER_BREAKER": "rate"},
}


def breaker_env(spec: str) -> dict[str, str]:
    """``off``, ``streak``, ``rate``, or ``rate[window_s=5,failure_rate=0.8]``: a breaker
    with settings of its own (``COURIER_BREAKER_<NAME>``), for a sweep."""
    name, _, rest = spec.partition("[")
    env = dict(BREAKERS[name])
    for pair in filter(None, rest.rstrip("]").split(",")):
        key, _, value = pair.partition("=")
        env[f"COURIER_BREAKER_{key.strip().upper()}"] = value.strip()
    return env


@dataclass
class Row:
    scenario: str
    breaker: str
    jobs: int
    succeeded: int
    p50: float
    p95: float
    p99: float
    calls: int
    put_off: int  # runs handed back because the circuit was open
    down_calls: int = 0
    first_ok_s: float | None = None  # after recovery: the first call answered 200
    drained_s: float | None = None  # after recovery: every job submitted before it finished

    @property
    def calls_per_job(self) -> float:
        return self.calls / self.jobs if self.jobs else 0.0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class Run:
    """One worker with one breaker on a fresh database, and the jobs it ran."""

    def __init__(self, url: str, sim: Any, breaker: str, concurrency: int) -> None:
        from tests.support.jobs import DirectProducer
        from tests.support.workers import start_worker

        client = redis.Redis.from_url(url)
        client.flushdb()
        client.set("courier-test:db-lock", os.getpid(), ex=3600)
        client.close()
        self.url = url
        self.sim = sim
        self.breaker = breaker
        self.producer = DirectProducer(url)
        self.ids: list[str] = []
        self._lock = threading.Lock()
        self.worker = start_worker(
            url, sim, concurrency=concurrency, env=breaker_env(breaker), name="bench-breaker"
        )

    def submit(self, n: int, label: str) -> None:
        def part(k: int) -> None:
            from tests.support.jobs import DirectProducer

            producer = DirectProducer(self.url)
            ids = [
                producer.submit(f"{label} {i}", MODEL, max_attempts=MAX_ATTEMPTS)
                for i in range(k, n, 4)
            ]
            with self._lock:
                self.ids += ids
            producer.close()

        threads = [threading.Thread(target=part, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    def submit_one(self, label: str) -> None:
        job_id = self.producer.submit(label, MODEL, max_attempts=MAX_ATTEMPTS)
        with self._lock:
            self.ids.append(job_id)

    def wait(self, timeout: float = 600) -> list[dict[str, str]]:
        deadline = time.monotonic() + timeout
        pending = list(self.ids)
        while pending and time.monotonic() < deadline:
            statuses = self.producer.redis.pipeline(transaction=False)
            for job_id in pending:
                statuses.hget(f"courier:job:{job_id}", "status")
            done = {"succeeded", "failed", "cancelled", "expired"}
            pending = [j for j, s in zip(pending, statuses.execute(), strict=True) if s not in done]
            time.sleep(0.5)
        time.sleep(1.5)  # the worker's metrics reach Redis every second
        return [self.producer.store.get(j) or {} for j in self.ids]

    def row(self, scenario: str, records: list[dict[str, str]]) -> Row:
        ended = [r for r in records if r.get("finished_at")]
        took = [float(r["finished_at"]) - float(r["created_at"]) for r in ended]
        calls = [c for c in self.sim.log() if c.get("status") is not None]
        put_off = self.producer.redis.hget("courier:metrics:requeued", "circuit_open")
        return Row(
            scenario=scenario,
            breaker=self.breaker,
            jobs=len(records),
            succeeded=sum(1 for r in records if r.get("status") == "succeeded"),
            p50=percentile(took, 0.5),
            p95=percentile(took, 0.95),
            p99=percentile(took, 0.99),
            calls=len(calls),
            put_off=int(put_off or 0),
        )

    def stop(self) -> None:
        self.worker.signal(signal.SIGKILL)
        self.worker.stop()
        self.producer.close()


def random_faults(url: str, sim: Any, breaker: str, seed: int, args: argparse.Namespace) -> Row:
    sim.reset()
    sim.configure(latency=LATENCY_S, fault_mix=FAULT_MIX, seed=seed)
    run = Run(url, sim, breaker, args.concurrency)
    try:
        run.submit(args.jobs, f"random-{seed}")
        row = run.row(f"random faults, seed {seed}", run.wait())
    finally:
        run.stop()
    return row


def outage(url: str, sim: Any, breaker: str, args: argparse.Namespace) -> Row:
    sim.reset()
    sim.configure(latency=LATENCY_S)
    run = Run(url, sim, breaker, args.concurrency)
    try:
        started = time.time()
        down_at = up_at = 0.0
        for i in range(int(args.rate * args.duration)):
            due = started + i / args.rate
            time.sleep(max(0.0, due - time.time()))
            if not down_at and time.time() >= started + args.outage_at:
                down_at = time.time()
                sim.outage(args.outage)
                up_at = down_at + args.outage
            run.submit_one(f"outage {i}")
        records = run.wait()
        row = run.row("outage", records)
    finally:
        run.stop()
    log = sim.log()
    row.down_calls = sum(1 for c in log if c["status"] == 503 and c["started"] <= up_at + 0.05)
    answered = [c["started"] for c in log if c["status"] == 200 and c["started"] >= up_at]
    row.first_ok_s = min(answered) - up_at if answered else None
    before = [float(r["finished_at"]) for r in records if float(r["created_at"]) < up_at]
    row.drained_s = max(before) - up_at if before else None
    return row


NOTES = [
    "Notes. Completion is `finished_at - created_at` of each job. 'Runs put off' counts the",
    "hand-backs with `waiting_for: circuit_open`. 'Calls while down' are the 503s the",
    "outage answered; 'first 200 after recovery' is when the provider answered a call",
    "again; 'jobs before recovery all done' is when the last job submitted before the",
    "recovery ended. Where no circuit opened (0 runs put off), rows differ only by this",
    "shared machine's noise: compare them within a seed, and read the ratio loosely.",
]


def seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


def write_results(args: argparse.Namespace, rows: list[Row], took_s: float) -> str:
    from config.settings import Settings

    s = Settings()
    lines = [
        "# Circuit breakers under faults: rate vs streak vs none",
        "",
        f"`python -m bench.breaker --jobs {args.jobs} --seeds {args.seeds} --rate {args.rate:g} "
        f"--duration {args.duration:g} --outage-at {args.outage_at:g} --outage {args.outage:g}` "
        f"on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores (shared), Python "
        f"{platform.python_version()}; {took_s / 60:.1f} min.",
        "",
        f"Simulator at {LATENCY_S:g} s latency; one gevent worker, `-c {args.concurrency}`, "
        f"per run, on a fresh Redis database; jobs `max_attempts` {MAX_ATTEMPTS}, no fallback.",
        f"Breakers: `off`; `streak` (before 2026-12-07: 5 consecutive retryable failures, 429s "
        f"included, open 30 s); `rate` (defaults: failures {s.breaker_failure_rate:.0%} of "
        f"the calls started in the last {s.breaker_window_s:g} s, {s.breaker_min_calls} calls "
        f"at least, open {s.breaker_cooldown_s:g} s, {s.breaker_probes} probes, 429s not "
        f"counted); `rate[...]`: the rate breaker with those settings changed.",
        "",
        f"Random faults: 15 % 429, 10 % 500, 5 % 503 (seeded), {args.jobs} jobs at once. "
        f"Outage: {args.rate:g} jobs/s for {args.duration:g} s, every call answered 503 from "
        f"{args.outage_at:g} s for {args.outage:g} s.",
        "",
        "| scenario | breaker | jobs | succeeded | p50 | p95 | p99 | calls/job | runs put off "
        "by an open circuit | calls while down | first 200 after recovery | jobs before "
        "recovery all done |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        down = str(r.down_calls) if r.scenario == "outage" else "-"
        lines.append(
            f"| {r.scenario} | {r.breaker} | {r.jobs} | {r.succeeded} | {r.p50:.2f} s "
            f"| {r.p95:.2f} s | {r.p99:.2f} s | {r.calls_per_job:.2f} | {r.put_off} | {down} "
            f"| {seconds(r.first_ok_s)} | {seconds(r.drained_s)} |"
        )
    lines += ["", "Targets (the rate breaker):", ""]
    off = {r.scenario: r for r in rows if r.breaker == "off"}
    for r in rows:
        base = off.get(r.scenario)
        if r.breaker == "off" or base is None:
            continue
        if r.scenario.startswith("random") and base.p95 > 0:
            ratio = r.p95 / base.p95
            verdict = "met" if ratio <= 1.5 else "not met"
            lines.append(
                f"- {r.scenario}, {r.breaker}: p95 {ratio:.2f}x of no breaker "
                f"(target <= 1.5x: {verdict if r.breaker.startswith('rate') else 'for reference'})"
            )
        if r.scenario == "outage" and base.down_calls:
            share = 100 * r.down_calls / base.down_calls
            env = breaker_env(r.breaker)
            cooldown = float(env.get("COURIER_BREAKER_COOLDOWN_S", s.breaker_cooldown_s))
            ok = share <= 5 and r.first_ok_s is not None and r.first_ok_s <= cooldown
            verdict = ("met" if ok else "not met") if r.breaker.startswith("rate") else "reference"
            lines.append(
                f"- outage, {r.breaker}: {r.down_calls} calls to the dead provider, {share:.1f} % "
                f"of the {base.down_calls} without a breaker (target <= 5 %); calls answered "
                f"again {seconds(r.first_ok_s)} after recovery, cool-down {cooldown:g} s "
                f"(target: within one): {verdict}"
            )
    lines += ["", *NOTES]
    text = "\n".join(lines) + "\n"
    RESULTS.write_text(text)
    return text


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--jobs", type=int, default=500, help="jobs per random-fault run")
    parser.add_argument("--seeds", type=int, default=1, help="random-fault runs per breaker")
    parser.add_argument("--rate", type=float, default=15.0, help="jobs/s in the outage run")
    parser.add_argument("--duration", type=float, default=36.0, help="s of outage-run arrivals")
    parser.add_argument("--outage-at", type=float, default=8.0)
    parser.add_argument("--outage", type=float, default=20.0, help="s the provider is down")
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument(
        "--breakers",
        default="off;streak;rate",
        help="semicolon-separated: off;streak;rate;rate[window_s=5,failure_rate=0.8]",
    )
    parser.add_argument(
        "--redis-host", default=os.environ.get("COURIER_TEST_REDIS_HOST", "127.0.0.1")
    )
    parser.add_argument("--redis-port", type=int, default=6379)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from bench.redis_db import claim_db_number as claim_db
    from tests.support.procs import free_port, python_module, wait_http
    from tests.support.simulator import SimulatorHandle

    breakers = [b for b in args.breakers.replace(";", " ").split() if b]
    db = claim_db(args.redis_host, args.redis_port)
    url = f"redis://{args.redis_host}:{args.redis_port}/{db}"
    port = free_port()
    sim_proc = python_module("simulator", "--port", str(port), name="bench-sim")
    rows: list[Row] = []
    started = time.monotonic()
    try:
        wait_http(f"http://127.0.0.1:{port}/_sim/health")
        sim = SimulatorHandle(f"http://127.0.0.1:{port}")
        for seed in range(1, args.seeds + 1):
            for breaker in breakers:
                rows.append(random_faults(url, sim, breaker, seed, args))
                print(rows[-1], flush=True)
        for breaker in breakers:
            rows.append(outage(url, sim, breaker, args))
            print(rows[-1], flush=True)
    finally:
        sim_proc.stop()
        client = redis.Redis.from_url(url)
        client.flushdb()
        client.close()
    print(write_results(args, rows, time.monotonic() - started))


if __name__ == "__main__":
    main()
