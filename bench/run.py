"""Courier's benchmark suite: ``python -m bench.run`` (``make bench``).

Against the provider simulator at each latency and for each job count: Courier (API +
one gevent worker with the shipped defaults; scale-out cells with one worker per core) and
the seeds' prefork baseline; the API's submit rates; the worker's CPU per job against a
bare SDK call's, in cells interleaved with bare runs; one job at a time on an idle system;
high-priority waits behind a 10,000-job low backlog. Writes ``bench/results.md`` and
``bench/throughput.png`` and prints the tables.

``--quick`` runs a small matrix (a few minutes). The default one takes 20-30 minutes on
this 2-core machine, most of it in the baseline's like-for-like cell (1,000 jobs at 1 s on
two slots: ~500 s); other baseline cells longer than ``--baseline-max-s`` are reported as
not run. ``--profile`` samples the worker with py-spy during the 0 s cell with the most
jobs; ``--update`` re-runs only the sections not ``--skip``-ped and merges their cells into
``bench/results.json``; ``--render`` rebuilds the report from that file.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shlex
import sys
import time
import traceback
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from bench import hotspots, saved
from bench.bare import CpuComparison, compare_cpu
from bench.harness import LOG_DIR, REDIS_URL, Simulator, flush, start_api
from bench.idle import IdleOverhead, idle_overhead
from bench.plot import plot
from bench.pool import compare_pool
from bench.priority import PriorityResult, run_priority
from bench.report import Run, render
from bench.scenarios import (
    SUBMIT_BATCH,
    SUBMIT_CONCURRENCY,
    Cell,
    baseline_estimate_s,
    run_baseline_cell,
    run_courier_cell,
    submit_probe,
)

HERE = Path(__file__).resolve().parent


def floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small matrix: 10,100 jobs at 0,1 s")
    p.add_argument("--sizes", type=ints, help="job counts (default 10,100,1000,5000)")
    p.add_argument("--latencies", type=floats, help="simulated latencies (default 0,1,5)")
    p.add_argument(
        "--extra-sizes",
        type=ints,
        help="counts both systems also run, so the ratio compares like with like (default 200)",
    )
    p.add_argument(
        "--baseline-max-s",
        type=float,
        default=150,
        help="skip baseline cells estimated to take longer (default 150 s)",
    )
    p.add_argument("--baseline-slots", type=int, default=os.cpu_count() or 2)
    p.add_argument("--backlog", type=int, help="low jobs ahead of the high ones (default 10000)")
    p.add_argument("--high-jobs", type=int, help="high jobs submitted (default 50)")
    p.add_argument("--spread", type=float, default=5.0, help="seconds over which highs arrive")
    p.add_argument("--priority-latency", type=float, default=1.0)
    p.add_argument("--bare-calls", type=int, help="bare SDK calls per run (default 300)")
    p.add_argument("--cpu-jobs", type=int, help="jobs per CPU-comparison cell (default 5000)")
    p.add_argument("--cpu-reps", type=int, help="CPU-comparison cells (default 3)")
    p.add_argument(
        "--pool-reps", type=int, default=2, help="call pool on/off pairs of cells (default 2)"
    )
    p.add_argument(
        "--submit-concurrency", type=int, default=SUBMIT_CONCURRENCY, help="POSTs in flight"
    )
    p.add_argument(
        "--submit-batch",
        type=int,
        default=SUBMIT_BATCH,
        help=f"jobs per POST /v1/jobs/batch; 0: one POST /v1/jobs each (default {SUBMIT_BATCH})",
    )
    p.add_argument(
        "--scale-processes",
        type=int,
        default=os.cpu_count() or 2,
        help="worker processes of the scale-out cells (default: one per core, as the baseline)",
    )
    p.add_argument(
        "--scale-sizes", type=ints, help="job counts of the scale-out cells (default 1000,5000)"
    )
    p.add_argument("--scale-latency", type=float, default=1.0)
    p.add_argument(
        "--skip",
        default="",
        help="comma-separated: probe,cpu,pool,idle,courier,scale,priority,baseline",
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="py-spy the worker during the 0 s cell with the most jobs",
    )
    p.add_argument(
        "--update",
        action="store_true",
        help="replace only the sections run now in the saved results.json, then re-render",
    )
    p.add_argument(
        "--render",
        action="store_true",
        help="measure nothing: render results.md and throughput.png from results.json",
    )
    p.add_argument("--out", type=Path, default=HERE, help="where results.md/throughput.png go")
    args = p.parse_args(argv)
    quick = args.quick
    args.sizes = args.sizes or ([10, 100] if quick else [10, 100, 1000, 5000])
    args.latencies = (
        args.latencies if args.latencies is not None else ([0.0, 1.0] if quick else [0.0, 1.0, 5.0])
    )
    if args.extra_sizes is None:
        args.extra_sizes = [] if quick else [200]
    args.backlog = args.backlog or (1000 if quick else 10000)
    args.high_jobs = args.high_jobs or (20 if quick else 50)
    args.bare_calls = args.bare_calls or (100 if quick else 300)
    args.cpu_jobs = args.cpu_jobs or (500 if quick else 5000)
    args.cpu_reps = args.cpu_reps or (1 if quick else 3)
    args.scale_sizes = args.scale_sizes or ([100] if quick else [1000, 5000])
    args.skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    return args


def summary(cell: Cell) -> str:
    if not cell.ran:
        return f"{cell.system} {cell.latency:g}s x {cell.jobs}: not run ({cell.note})"
    return (
        f"{cell.system} {cell.latency:g}s x {cell.jobs}: {cell.throughput or 0:.1f} jobs/s, "
        f"p50 {cell.p50 or 0:.2f}s p95 {cell.p95 or 0:.2f}s, submit "
        f"{cell.submit_rate or 0:.0f}/s, in-flight {cell.peak_in_flight}, "
        f"CPU/job {cell.cpu_ms_per_job or 0:.1f} ms, failed {cell.failed}, wall "
        f"{cell.wall_s:.0f}s {cell.note}"
    )


def _message(line: str) -> str:
    """A log line's message, without addresses, so that repeats across runs group."""
    try:
        text = str(json.loads(line).get("msg", line))
    except ValueError:
        text = line
    return re.sub(r"0x[0-9a-f]+", "0x..", text.strip())[:200]


def suspect_notes(cells: list[Cell], priority: PriorityResult | None) -> list[str]:
    """Worker log lines worth a look, grouped by message over all runs."""
    runs: dict[tuple[str, str], set[str]] = {}
    counts: Counter[tuple[str, str]] = Counter()
    sources = [(c.system, f"{c.latency:g} s x {c.jobs}", c.suspect_lines) for c in cells]
    if priority is not None:
        sources.append(("courier", "priority", priority.suspect_lines))
    for system, where, lines in sources:
        for line in lines:
            key = (system, _message(line))
            counts[key] += 1
            runs.setdefault(key, set()).add(where)
    total = {system: sum(1 for s, _, _ in sources if s == system) for system, _, _ in sources}
    return [
        f"{system} worker logs: `{message}` ({n} lines, in {len(runs[system, message])} of "
        f"{total[system]} worker runs)"
        for (system, message), n in counts.most_common(8)
    ]


def stop_notes(cells: list[Cell], priority: PriorityResult | None) -> list[str]:
    slow = [c for c in cells if c.stop_s > 10]
    notes = [
        f"{c.system} worker at {c.latency:g} s x {c.jobs} took {c.stop_s:.0f} s to stop"
        for c in slow
    ]
    if priority is not None:
        notes.append(
            f"Stopping the worker after the priority run ({priority.in_flight_at_stop} jobs in "
            f"flight, COURIER_SHUTDOWN_GRACE_S=2) took {priority.stop_s:.1f} s."
        )
    return notes


def busy_processes(threshold: float = 10.0) -> list[str]:
    """Other processes using more than ``threshold`` % of a CPU over one second."""
    import psutil

    mine = {os.getpid(), *(p.pid for p in psutil.Process().children(recursive=True))}
    procs = [p for p in psutil.process_iter(["pid", "cmdline"]) if p.pid not in mine]
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.cpu_percent(None)
    time.sleep(1.0)
    busy = []
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            share = proc.cpu_percent(None)
            if share >= threshold:
                command = " ".join(proc.info["cmdline"] or [])[:70]
                busy.append((share, f"pid {proc.pid} `{command}` {share:.0f} %"))
    return [text for _, text in sorted(busy, reverse=True)]


def write(run: Run, out: Path) -> None:
    text = render(run)
    (out / "results.md").write_text(text)
    plot(run.courier, run.baseline, out / "throughput.png")
    print()
    print(text)
    print(f"wrote {out / 'results.md'} and {out / 'throughput.png'}")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.render:
        loaded = saved.load(args.out / "results.json")
        if loaded is None:
            raise SystemExit(f"no {args.out / 'results.json'} to render")
        write(loaded, args.out)
        return
    command = "python -m bench.run " + shlex.join(argv if argv is not None else sys.argv[1:])
    started, t0 = datetime.now(UTC), time.monotonic()
    load_before = os.getloadavg()
    busy_before = busy_processes()
    sizes = sorted(set(args.sizes) | set(args.extra_sizes))
    baseline_sizes = sorted(set(sizes) | {min(args.scale_sizes)})
    print(f"bench: sizes {sizes}, latencies {args.latencies}, logs in {LOG_DIR}", flush=True)
    flush(REDIS_URL)
    sim = Simulator(0.0)
    api, api_url = start_api(sim)
    courier: list[Cell] = []
    baseline: list[Cell] = []
    spots: list[str] = []
    cpu: CpuComparison | None = None
    pool: list[Cell] = []
    priority: PriorityResult | None = None
    idle: IdleOverhead | None = None
    probe: list[tuple[int, int, float, float]] = []
    profile_target = (min(args.latencies), max(sizes)) if args.profile else None
    try:
        if "probe" not in args.skip:
            probe = submit_probe(api, api_url, 100 if args.quick else 300)
            for batch, concurrency, rate, cpu_ms in probe:
                print(
                    f"API alone, batch {batch}, {concurrency} in flight: {rate:.0f} jobs/s, "
                    f"{cpu_ms:.1f} ms CPU per job"
                )
        if "idle" not in args.skip:
            idle = idle_overhead(sim, api_url)
            print(f"idle: submit → succeeded p50 {idle.e2e_p50_ms:.1f} ms", flush=True)
        for latency in args.latencies if "courier" not in args.skip else []:
            for jobs in sizes:
                profile_out = None
                if profile_target == (latency, jobs):
                    profile_out = str(LOG_DIR / f"worker-{latency:g}s-{jobs}.pyspy.txt")
                try:
                    cell = run_courier_cell(
                        sim, api_url, latency, jobs, profile_out,
                        args.submit_concurrency, args.submit_batch,
                    )  # fmt: skip
                except Exception as exc:
                    traceback.print_exc()
                    cell = Cell("courier", latency, jobs, note=f"error: {exc!r}"[:200])
                courier.append(cell)
                print(summary(cell), flush=True)
                if profile_out and Path(profile_out).exists():
                    found = hotspots.summarise(Path(profile_out))
                    spots = hotspots.to_markdown(found, f"{jobs} jobs at {latency:g} s")
                    print("\n".join(spots), flush=True)
        if "cpu" not in args.skip:

            def worker_cpu_ms(env: dict[str, str]) -> float | None:
                return run_courier_cell(
                    sim, api_url, 0.0, args.cpu_jobs, None,
                    args.submit_concurrency, args.submit_batch, env=env,
                ).cpu_ms_per_job  # fmt: skip

            cpu = compare_cpu(sim, args.bare_calls, args.cpu_jobs, args.cpu_reps, worker_cpu_ms)
        if "pool" not in args.skip:

            def pool_cell(env: dict[str, str]) -> Cell:
                return run_courier_cell(
                    sim, api_url, 5.0, 1000, None,
                    args.submit_concurrency, args.submit_batch, env=env,
                )  # fmt: skip

            pool = compare_pool(pool_cell, args.pool_reps)
        for jobs in args.scale_sizes if "scale" not in args.skip else []:
            try:
                cell = run_courier_cell(
                    sim, api_url, args.scale_latency, jobs, None,
                    args.submit_concurrency, args.submit_batch, args.scale_processes,
                )  # fmt: skip
            except Exception as exc:
                traceback.print_exc()
                cell = Cell("courier", args.scale_latency, jobs, note=f"error: {exc!r}"[:200])
                cell.processes = args.scale_processes
            courier.append(cell)
            print(summary(cell), flush=True)
        if "priority" not in args.skip:
            priority = run_priority(
                sim, api_url, args.backlog, args.high_jobs, args.spread, args.priority_latency
            )
            print(
                f"priority: high wait p50 {priority.wait_p50}, p95 {priority.wait_p95} "
                f"(backlog {priority.backlog}) {priority.note}",
                flush=True,
            )
        for latency in args.latencies if "baseline" not in args.skip else []:
            for jobs in baseline_sizes:
                estimate = baseline_estimate_s(jobs, latency, args.baseline_slots)
                # The throughput target's like-for-like pair: the baseline also runs the
                # smallest scale-out count at the scale-out latency, however long it takes.
                ratio_pair = latency == args.scale_latency and jobs == min(args.scale_sizes)
                if estimate > args.baseline_max_s and not ratio_pair:
                    note = (
                        f"would take ~{estimate:.0f} s ({args.baseline_slots} slots x "
                        f"{latency:g} s calls) > --baseline-max-s {args.baseline_max_s:g}"
                    )
                    cell = Cell("baseline", latency, jobs, note=note)
                else:
                    try:
                        cell = run_baseline_cell(sim, latency, jobs, args.baseline_slots)
                    except Exception as exc:
                        traceback.print_exc()
                        cell = Cell("baseline", latency, jobs, note=f"error: {exc!r}"[:200])
                baseline.append(cell)
                print(summary(cell), flush=True)
    finally:
        busy_after = busy_processes()
        api.stop()
        sim.stop()
    run = Run(
        command=command,
        started=started,
        duration_s=time.monotonic() - t0,
        load_before=load_before,
        load_after=os.getloadavg(),
        courier=courier,
        baseline=baseline,
        cpu=cpu,
        priority=priority,
        idle=idle,
        hotspots=spots,
        busy_before=busy_before,
        busy_after=busy_after,
        probe=probe,
        submit_concurrency=args.submit_concurrency,
        submit_batch=args.submit_batch,
        notes=[],
        reruns=[],
        pool=pool,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    previous = saved.load(args.out / "results.json") if args.update else None
    if previous is not None:
        run = saved.merge(previous, run, set(saved.SECTIONS) - args.skip)
    run.notes = [
        *suspect_notes(run.courier + run.baseline, run.priority),
        *stop_notes(run.courier + run.baseline, run.priority),
    ]
    saved.save(run, args.out / "results.json")
    write(run, args.out)


if __name__ == "__main__":
    main()
