"""Conversations, measured (``make bench-conversations``; results in
``bench/results-conversations.md``).

One API process, one worker (shipped defaults), the simulator at zero latency, on a Redis DB
of its own.

1. **A line of 100 turns** is built the way a client would in a hurry: all 100 jobs submitted
   at once, each naming the previous one; each waits for its parent and is released by the
   parent's ending. The release delay of a turn = when the simulator received its request
   minus when its parent finished (``finished_at``).
2. **Submission and start at depth 1, 10, 100**: a child of the line's job at depth 0, 9, 99
   (so the child is at depth 1, 10, 100; its parent has succeeded), against a plain job as
   the baseline, measured in the same run, round-robin, one job at a time. Submission = the
   client's wall time of ``POST /v1/jobs``; start = when the simulator received the provider
   request minus the job's ``created_at`` (one clock: the same machine), which includes the
   worker reading the line of ancestors (one script) and building the messages.
3. **Building the messages** in-process (:func:`core.conversations.request_for`): median µs per
   call at each depth, and the transcript's size.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import redis

from bench import harness
from bench.harness import API_KEY, Simulator, flush, start_api, start_courier_worker
from bench.redis_db import claim_db
from config.settings import Settings
from core import conversations, keys

RESULTS = Path(__file__).with_name("results-conversations.md")
HEADERS = {"Authorization": f"Bearer {API_KEY}"}
MODEL = "openai:gpt-4o-mini"
DEPTHS = (1, 10, 100)


def body(text: str, parent: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "model": MODEL,
        "request": {"messages": [{"role": "user", "content": text}], "max_tokens": 40},
    }
    if parent:
        out["parent_job_id"] = parent
    return out


def wait_ended(api: httpx.Client, job_id: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job: dict[str, Any] = api.get(f"/v1/jobs/{job_id}", params={"wait": 10}).json()
        if job["status"] in harness.TERMINAL:
            return job
        if time.monotonic() > deadline:
            raise TimeoutError(f"{job_id} still {job['status']}")


def arrivals(sim: Simulator) -> dict[str, float]:
    """Each request's prompt (its last user message) → when the simulator received it."""
    return {entry["prompt"]: entry["started"] for entry in sim.handle.log() if entry["prompt"]}


def build_line(api: httpx.Client, sim: Simulator, length: int) -> tuple[list[str], list[float]]:
    """``length`` turns submitted at once, each the child of the previous: their ids, and the
    release delay of each turn after the first (s)."""
    texts = [f"turn {i} {uuid.uuid4().hex}" for i in range(length)]
    ids: list[str] = []
    for text in texts:
        response = api.post("/v1/jobs", json=body(text, ids[-1] if ids else None))
        response.raise_for_status()
        ids.append(response.json()["id"])
    jobs = [wait_ended(api, job_id) for job_id in ids]
    assert all(job["status"] == "succeeded" for job in jobs), [j["status"] for j in jobs]
    seen = arrivals(sim)
    finished = [_epoch(job["finished_at"]) for job in jobs]
    delays = [seen[texts[i]] - finished[i - 1] for i in range(1, length)]
    return ids, delays


def _epoch(stamp: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def submit_and_start(
    api: httpx.Client, sim: Simulator, parents: dict[str, str | None], rounds: int
) -> dict[str, dict[str, list[float]]]:
    """Round-robin over the cells, one job at a time: submission wall time (ms) and
    creation → provider request (ms) per cell."""
    out: dict[str, dict[str, list[float]]] = {c: {"submit": [], "start": []} for c in parents}
    for _ in range(rounds):
        for cell, parent in parents.items():
            text = f"{cell} {uuid.uuid4().hex}"
            started = time.perf_counter()
            response = api.post("/v1/jobs", json=body(text, parent))
            out[cell]["submit"].append((time.perf_counter() - started) * 1000)
            response.raise_for_status()
            job = wait_ended(api, response.json()["id"])
            assert job["status"] == "succeeded", job
            arrived = arrivals(sim)[text]
            out[cell]["start"].append((arrived - _epoch(job["created_at"])) * 1000)
    return out


def build_costs(client: redis.Redis, line: list[str], repeat: int) -> dict[int, dict[str, float]]:
    """In-process cost of building a depth-d child's messages (one CHAIN script + Python)."""
    settings = Settings()
    costs: dict[int, dict[str, float]] = {}
    for depth in DEPTHS:
        record = {"id": "job_bench", "tenant": "bench", "parent_job_id": line[depth - 1]}
        own = {"messages": [{"role": "user", "content": "next"}]}
        times = []
        for _ in range(repeat):
            started = time.perf_counter()
            built = conversations.request_for(client, record, own, settings)
            times.append((time.perf_counter() - started) * 1e6)
        costs[depth] = {
            "us": statistics.median(times),
            "messages": len(built["messages"]),
            "bytes": conversations.json_bytes(built["messages"]),
        }
    return costs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.conversations")
    parser.add_argument("--rounds", type=int, default=60, help="jobs per cell")
    parser.add_argument("--repeat", type=int, default=200, help="in-process builds per depth")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    harness.REDIS_URL = os.environ.get("BENCH_REDIS_URL") or claim_db()
    load_before = os.getloadavg()
    began = time.monotonic()
    sim = Simulator(0)
    sim.handle.configure(record_messages=False)
    api_proc, url = start_api(sim)
    worker = start_courier_worker(sim)
    client = redis.Redis.from_url(harness.REDIS_URL, decode_responses=True)
    results: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    try:
        with httpx.Client(base_url=url, headers=HEADERS, timeout=60) as api:
            line, delays = build_line(api, sim, max(DEPTHS))
            results["release_ms"] = [d * 1000 for d in delays]
            parents: dict[str, str | None] = {"plain": None}
            parents |= {f"depth {d}": line[d - 1] for d in DEPTHS}
            results["cells"] = submit_and_start(api, sim, parents, args.rounds)
        results["build"] = build_costs(client, line, args.repeat)
        results["record_bytes"] = client.memory_usage(keys.job(line[-1])) or 0
    finally:
        client.close()
        worker.stop(timeout=10)
        api_proc.stop()
        sim.stop()
        flush(harness.REDIS_URL)  # the claim's lock too: the DB is free again
    results["load_before"] = load_before
    results["seconds"] = round(time.monotonic() - began)
    write_results(results, args)


def write_results(results: dict[str, Any], args: argparse.Namespace) -> None:
    import platform

    cells = results["cells"]
    base_submit = statistics.median(cells["plain"]["submit"])
    base_start = statistics.median(cells["plain"]["start"])
    load = " / ".join(f"{x:.2f}" for x in results["load_before"])
    lines = [
        "# Conversations: submission and start of a child job by depth",
        "",
        "Reproduce: `make bench-conversations` (`python -m bench.conversations "
        f"--rounds {args.rounds}`).",
        "",
        f"- date: {results['date']}, {results['seconds']} s",
        f"- machine: {os.cpu_count()} CPUs, load average before {load}; Python "
        f"{platform.python_version()}",
        "- one API process, one worker (shipped defaults), simulator at 0 latency; "
        f"{args.rounds} jobs per cell, round-robin, one at a time",
        "",
        "## Submission and start (medians; ratio against a plain job of the same run)",
        "",
        "| job | submission (ms) | vs plain | start: created → provider request (ms) | vs plain |",
        "|---|---|---|---|---|",
    ]
    for cell, values in cells.items():
        submit = statistics.median(values["submit"])
        start = statistics.median(values["start"])
        lines.append(
            f"| {cell} | {submit:.1f} | {submit / base_submit:.2f} | {start:.1f} | "
            f"{start / base_start:.2f} |"
        )
    release = results["release_ms"]
    lines += [
        "",
        "## Release of a waiting child (a line of 100 turns submitted at once)",
        "",
        f"- parent's `finished_at` → the child's provider request: median "
        f"{statistics.median(release):.1f} ms, max {max(release):.1f} ms over "
        f"{len(release)} turns (the schedule's safety net would take 30 s, the orphan "
        "check 90 s)",
        "",
        "## Building a child's messages in-process (one CHAIN script + Python)",
        "",
        "| depth | median µs | messages sent | bytes of messages |",
        "|---|---|---|---|",
    ]
    for depth, cost in results["build"].items():
        lines.append(f"| {depth} | {cost['us']:.0f} | {cost['messages']} | {cost['bytes']:,} |")
    lines += [
        "",
        f"A record at depth 100 takes {results['record_bytes']:,} bytes in Redis (MEMORY "
        "USAGE): each job stores only its own messages and reply.",
        "",
    ]
    RESULTS.write_text("\n".join(lines))
    print("\n".join(lines))
    print(json.dumps({k: v for k, v in results.items() if k != "cells"}, default=str)[:400])


if __name__ == "__main__":
    main()
