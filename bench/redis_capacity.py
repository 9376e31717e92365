"""What one job costs the Redis that holds Courier, and so how many jobs/s one Redis core
carries (``make bench-redis`` → ``bench/results-redis.md``; README, High availability).

Each cell starts a private ``redis-server`` (AOF, ``appendfsync everysec``, as production
runs it; with a replica for the WAIT cell), the simulator at 0 s latency, ``courier api``
and one ``courier worker``, then sends N jobs through ``POST /v1/jobs`` (or batches) and
reads Redis' own counters before and after: ``INFO commandstats`` (commands, those run inside
Lua scripts included), ``INFO cpu`` (the main thread's CPU: Redis runs commands on one core),
``INFO memory`` (bytes held per ended job, its record kept for COURIER_JOB_RETENTION_S) and
``INFO stats`` (bytes on the wire, and to the replica). What the processes do while idle
(lease renewals, the sweeper, metric flushes) is measured for a few seconds first and taken
off, so the figures are per job. Cells alternate over ``--rounds``; medians are reported.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import redis

from bench.harness import LOG_DIR, Simulator, courier_env, start_courier_worker
from bench.scenarios import submit_via_api
from core import keys
from core.replication import replicas_in_sync
from tests.support import stack
from tests.support.procs import free_port, wait_until

RESULTS = Path(__file__).with_name("results-redis.md")
TENANT = "bench"  # bench.harness's API key authenticates as this tenant
IDLE_S = 5.0
SCRIPT_COMMANDS = ("evalsha", "eval", "evalsha_ro", "eval_ro", "fcall")
BUFFERS = ("mem_replication_backlog", "mem_clients_slaves", "mem_clients_normal", "mem_aof_buffer")


@dataclass(frozen=True)
class CellSpec:
    name: str
    replica: bool = False  # a replica, and COURIER_REDIS_MIN_REPLICAS=1 (WAIT before acks)
    batch: int = 0  # jobs per POST /v1/jobs/batch; 0: one POST /v1/jobs per job


CELLS = (
    CellSpec("one Redis, POST /v1/jobs"),
    CellSpec("master + replica, WAIT 1 (COURIER_REDIS_MIN_REPLICAS=1)", replica=True),
    CellSpec("one Redis, POST /v1/jobs/batch of 100", batch=100),
)


class PrivateRedis:
    """A master (and optionally a replica) on free loopback ports, in a temp dir."""

    def __init__(self, replica: bool) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("redis-server is not installed")
        self.dir = Path(tempfile.mkdtemp(prefix="courier-bench-redis-"))
        self.port = free_port()
        self.procs = [self._start(binary, self.port, [])]
        if replica:
            port = free_port()
            self.procs.append(
                self._start(binary, port, ["--replicaof", "127.0.0.1", str(self.port)])
            )
        self.client = redis.Redis(port=self.port, decode_responses=True)
        wait_until(lambda: replicas_in_sync(self.client) == len(self.procs) - 1, timeout=30)

    def _start(self, binary: str, port: int, extra: list[str]) -> subprocess.Popen[bytes]:
        node_dir = self.dir / str(port)
        node_dir.mkdir()
        proc = subprocess.Popen(
            [
                binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(node_dir),
                "--save", "", "--appendonly", "yes", "--appendfsync", "everysec",
                "--maxmemory-policy", "noeviction", "--repl-diskless-sync-delay", "0", *extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        probe = redis.Redis(port=port)
        wait_until(lambda: bool(probe.ping()), timeout=10)
        probe.close()
        return proc

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        self.client.close()
        for proc in self.procs:
            proc.kill()
            proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


@dataclass
class Snapshot:
    at: float
    calls: Counter[str]
    cpu_s: float
    memory: int
    net_in: int
    net_out: int
    repl_out: int

    @classmethod
    def take(cls, client: redis.Redis) -> Snapshot:
        stats = client.info("commandstats")
        calls = Counter(
            {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}
        )
        cpu = client.info("cpu")
        info = client.info("stats")
        return cls(
            at=time.monotonic(),
            calls=calls,
            cpu_s=float(cpu["used_cpu_user_main_thread"]) + float(cpu["used_cpu_sys_main_thread"]),
            memory=int(client.info("memory")["used_memory"]),
            net_in=int(info["total_net_input_bytes"]),
            net_out=int(info["total_net_output_bytes"]),
            repl_out=int(info.get("total_net_repl_output_bytes", 0)),
        )


@dataclass
class Delta:
    seconds: float
    calls: Counter[str]
    cpu_s: float
    net_in: int
    net_out: int
    repl_out: int

    @classmethod
    def between(cls, a: Snapshot, b: Snapshot, own: Counter[str] | None = None) -> Delta:
        calls = b.calls.copy()
        calls.subtract(a.calls)
        calls.subtract(own or Counter())
        calls.subtract(Counter({"info": 4}))  # the snapshot's own INFO calls
        return cls(b.at - a.at, calls, b.cpu_s - a.cpu_s, b.net_in - a.net_in,
                   b.net_out - a.net_out, b.repl_out - a.repl_out)  # fmt: skip

    def less(self, idle: Delta) -> Delta:
        """This delta without what the idle rate would have done over the same time."""
        share = self.seconds / idle.seconds
        calls = self.calls.copy()
        for name, n in idle.calls.items():
            calls[name] -= round(n * share)
        return Delta(
            self.seconds, +calls, self.cpu_s - idle.cpu_s * share,
            self.net_in - round(idle.net_in * share), self.net_out - round(idle.net_out * share),
            self.repl_out - round(idle.repl_out * share),
        )  # fmt: skip


@dataclass
class CellResult:
    spec: CellSpec
    jobs: int
    commands: float  # per job, commands run inside Lua scripts included
    scripts: float  # Lua script runs per job
    cpu_us: float  # Redis main-thread CPU per job
    memory: float  # bytes held per ended job
    net_in: float
    net_out: float
    repl_out: float
    idle_commands_per_s: float
    top: list[tuple[str, float]] = field(default_factory=list)

    @property
    def jobs_per_core_s(self) -> float:
        return 1e6 / self.cpu_us if self.cpu_us > 0 else float("inf")


def wait_all_ended(client: redis.Redis, timeout: float) -> int:
    """Poll the tenant's unfinished-jobs index until it is empty; returns the ZCARDs sent."""
    polls = 0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        polls += 1
        if client.zcard(keys.tenant_unfinished(TENANT)) == 0:
            return polls
        time.sleep(0.25)
    raise TimeoutError("jobs did not all end")


def run_cell(sim: Simulator, spec: CellSpec, jobs: int) -> CellResult:
    server = PrivateRedis(spec.replica)
    env = courier_env(
        sim,
        COURIER_REDIS_URL=server.url,
        COURIER_REDIS_MIN_REPLICAS="1" if spec.replica else "0",
    )
    api, api_url = stack.start_api(env, name="bench-redis-api")
    worker = start_courier_worker(sim, "-c", "200", env=env)
    try:
        submit_via_api(api_url, [f"warm-up {i}" for i in range(50)], batch=spec.batch)
        wait_all_ended(server.client, 60)
        idle_start = Snapshot.take(server.client)
        time.sleep(IDLE_S)
        idle = Delta.between(idle_start, Snapshot.take(server.client))
        before = Snapshot.take(server.client)
        ids, errors, _ = submit_via_api(
            api_url, [f"capacity {i} of {jobs}" for i in range(jobs)], batch=spec.batch
        )
        if errors or len(ids) != jobs:
            raise RuntimeError(f"{errors} submissions failed")
        polls = wait_all_ended(server.client, 60 + jobs / 20)
        after = Snapshot.take(server.client)
    finally:
        worker.stop()
        api.stop()
        server.stop()
    run = Delta.between(before, after, own=Counter({"zcard": polls})).less(idle)
    script_runs = sum(run.calls[name] for name in SCRIPT_COMMANDS)
    top = [(name, n / jobs) for name, n in run.calls.most_common(12)]
    return CellResult(
        spec, jobs,
        commands=sum(run.calls.values()) / jobs,
        scripts=script_runs / jobs,
        cpu_us=run.cpu_s / jobs * 1e6,
        memory=(after.memory - before.memory) / jobs,
        net_in=run.net_in / jobs, net_out=run.net_out / jobs, repl_out=run.repl_out / jobs,
        idle_commands_per_s=sum(idle.calls.values()) / idle.seconds,
        top=top,
    )  # fmt: skip


def median_of(results: list[CellResult], attr: str) -> float:
    return statistics.median(float(getattr(r, attr)) for r in results)


def report(by_cell: dict[CellSpec, list[CellResult]], jobs: int, rounds: int, took: float) -> str:
    lines = [
        "# Redis capacity per job",
        "",
        f"`make bench-redis` (`python -m bench.redis_capacity --jobs {jobs} --rounds {rounds}`),"
        f" {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {took / 60:.1f} min, on this"
        " shared 2-core machine. Medians over the rounds (the range in brackets); per job, with"
        " what the idle processes do over the same time taken off. A private `redis-server`"
        " 7 per cell (AOF, `appendfsync everysec`); the simulator at 0 s latency; one"
        " `courier api`, one `courier worker -c 200`. Commands include those Lua scripts run"
        " inside (Redis counts both); CPU is Redis' main thread, where every command runs.",
        "",
        "| cell | commands / job | Lua scripts / job | Redis CPU / job | jobs/s per Redis core"
        " | memory / ended job | bytes in / out per job | to the replica / job |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def cell(results: list[CellResult], attr: str, fmt: str) -> str:
        values = [float(getattr(r, attr)) for r in results]
        text = fmt.format(statistics.median(values))
        return f"{text} ({fmt.format(min(values))} to {fmt.format(max(values))})"

    for spec, results in by_cell.items():
        lines.append(
            f"| {spec.name} | {cell(results, 'commands', '{:.1f}')} "
            f"| {cell(results, 'scripts', '{:.1f}')} | {cell(results, 'cpu_us', '{:.0f} µs')} "
            f"| **{cell(results, 'jobs_per_core_s', '{:,.0f}')}** "
            f"| {cell(results, 'memory', '{:,.0f} B')} "
            f"| {median_of(results, 'net_in'):,.0f} / {median_of(results, 'net_out'):,.0f} B "
            f"| {median_of(results, 'repl_out'):,.0f} B |"
        )
    lines += ["", "Commands per job, by name (the first round of each cell):", ""]
    for spec, results in by_cell.items():
        top = ", ".join(f"{name} {n:.1f}" for name, n in results[0].top)
        idle = median_of(results, "idle_commands_per_s")
        lines.append(f"- {spec.name}: {top}; idle processes: {idle:.0f} commands/s")
    first, wait = list(by_cell.values())[:2]
    ratio = median_of(wait, "cpu_us") / median_of(first, "cpu_us")
    lines += [
        "",
        f"Redis CPU per job with a replica and WAIT against one Redis: {ratio:.2f} times "
        "(same run, medians).",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    sim = Simulator(latency=0)
    by_cell: dict[CellSpec, list[CellResult]] = {spec: [] for spec in CELLS}
    try:
        for round_no in range(args.rounds):
            for spec in CELLS:
                result = run_cell(sim, spec, args.jobs)
                by_cell[spec].append(result)
                print(
                    f"round {round_no + 1} {spec.name}: {result.commands:.1f} commands, "
                    f"{result.cpu_us:.0f} µs CPU, {result.memory:,.0f} B per job",
                    flush=True,
                )
    finally:
        sim.stop()
    text = report(by_cell, args.jobs, args.rounds, time.monotonic() - started)
    RESULTS.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
