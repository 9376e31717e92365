"""Live events and streamed output, measured (``make bench-stream``; results in
``bench/results-streaming.md``).

1. **Open streams**: with no worker running, N streamed jobs stay queued and N event
   streams are opened on one API process; its RSS before and after gives the memory per
   stream; submissions are timed before and while the streams are open; the streams are
   held past the 15 s keep-alive, then the jobs cancelled (each stream must end with
   ``job.cancelled``).
2. **Delivery delay**: M streamed jobs submitted in ten waves over a few seconds, an event
   stream opened on each as it is submitted (the simulator takes 1 s to its first byte, so
   the stream is open before any text), the simulator pacing its streams and logging when
   it sent each event; the delay of a piece of text is the time its ``output.delta`` reached the SSE
   reader minus the time the simulator sent its chunk (one clock: the same machine).
3. **Worker CPU**: K streamed jobs through a worker (its user+sys CPU ÷ jobs) against K
   bare streaming SDK calls (:mod:`bench.bare_stream`), run before and after each cell.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
import redis
import uvloop

from bench import harness
from bench.harness import (
    API_KEY,
    Sampler,
    Simulator,
    flush,
    percentile,
    start_api,
    start_courier_worker,
    tree_cpu_s,
)
from bench.redis_db import claim_db
from bench.sse import Received, read_stream
from bench.streaming_cpu import compare_cpu, submit_streamed
from simulator.replies import stream_pieces

RESULTS = Path(__file__).with_name("results-streaming.md")
# The simulator's time to a stream's first byte in the delivery cell: the reader of a job
# submitted in a wave is open before its first piece of text is sent.
FIRST_BYTE_S = 1.0
HEADERS = {"Authorization": f"Bearer {API_KEY}"}


def timed_submits(url: str, count: int) -> list[float]:
    """Latency (ms) of ``count`` sequential single submissions; the jobs are cancelled."""
    out, ids = [], []
    with httpx.Client(base_url=url, headers=HEADERS, timeout=60) as client:
        for i in range(count):
            body = {"model": "openai:gpt-4o-mini", "request": {"messages": [
                {"role": "user", "content": f"timed {i}"}]}}  # fmt: skip
            started = time.perf_counter()
            response = client.post("/v1/jobs", json=body)
            out.append((time.perf_counter() - started) * 1000)
            ids.append(response.json()["id"])
        for job_id in ids:
            client.post(f"/v1/jobs/{job_id}/cancel")
    return out


def cancel_all(url: str, ids: Sequence[str]) -> None:
    async def run() -> None:
        limits = httpx.Limits(max_connections=32)
        async with httpx.AsyncClient(base_url=url, headers=HEADERS, limits=limits) as client:
            gate = asyncio.Semaphore(32)

            async def one(job_id: str) -> None:
                async with gate:
                    await client.post(f"/v1/jobs/{job_id}/cancel", timeout=60)

            await asyncio.gather(*(one(job_id) for job_id in ids))

    asyncio.run(run())


# ---- 1. open streams ---------------------------------------------------------------


@dataclass
class OpenStreams:
    streams: int
    opened: int
    rss_before_mb: float
    rss_open_mb: float
    kb_per_stream: float
    submit_ms_before: float
    submit_ms_open: float
    held_s: float
    with_keepalive: int
    ended_cancelled: int


def open_streams(api_pid: int, url: str, count: int, hold_s: float) -> OpenStreams:
    ids = submit_streamed(url, [f"held {i} {uuid.uuid4().hex}" for i in range(count)])
    api = psutil.Process(api_pid)
    submit_before = statistics.median(timed_submits(url, 50))
    rss_before = api.memory_info().rss

    async def run() -> tuple[list[Received], int, float, float]:
        events = [asyncio.Event() for _ in ids]
        tasks = [
            asyncio.create_task(read_stream(url, API_KEY, job_id, opened))
            for job_id, opened in zip(ids, events, strict=True)
        ]
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in events)), 120)
        await asyncio.sleep(2)  # every stream has sent its stored events
        rss_open = api.memory_info().rss
        submit_open = statistics.median(await asyncio.to_thread(timed_submits, url, 50))
        await asyncio.sleep(hold_s)
        opened = sum(1 for task in tasks if not task.done())
        await asyncio.to_thread(cancel_all, url, ids)
        done = await asyncio.wait_for(asyncio.gather(*tasks), 120)
        return done, opened, rss_open, submit_open

    started = time.monotonic()
    done, opened, rss_open, submit_open = asyncio.run(run())
    held = time.monotonic() - started
    errors = [r.error or f"HTTP {r.status}" for r in done if r.error or r.status != 200]
    if errors:
        print(f"{len(errors)} stream(s) failed, e.g. {errors[0]}", flush=True)
    return OpenStreams(
        streams=count,
        opened=opened,
        rss_before_mb=rss_before / 2**20,
        rss_open_mb=rss_open / 2**20,
        kb_per_stream=(rss_open - rss_before) / 1024 / count,
        submit_ms_before=submit_before,
        submit_ms_open=submit_open,
        held_s=held,
        with_keepalive=sum(1 for r in done if r.keepalives),
        ended_cancelled=sum(1 for r in done if r.events and r.events[-1][2] == "job.cancelled"),
    )


# ---- 2. delivery delay -------------------------------------------------------------


@dataclass
class Delivery:
    jobs: int
    tps: float
    peak_in_flight: int
    pieces: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    deltas: int
    succeeded: int
    matched_output: int
    wall_s: float
    cpu_share: dict[str, float]  # CPU seconds ÷ wall seconds, per process, over the cell
    load: tuple[float, float]  # the machine's 1-minute load average before and after


def cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    """User+sys CPU seconds of each process (the bench's own without its children: they
    are the simulator, the API and the worker, counted apart)."""
    out = {}
    for name, pid in pids.items():
        try:
            if pid == os.getpid():
                times = psutil.Process(pid).cpu_times()
                out[name] = times.user + times.system
            else:
                out[name] = tree_cpu_s(pid)
        except psutil.Error:
            out[name] = 0.0
    return out


def redis_pid() -> int:
    client = redis.Redis.from_url(harness.REDIS_URL)
    try:
        return int(client.info("server")["process_id"])
    finally:
        client.close()


def delivery(
    sim: Simulator, url: str, worker: Any, api_pid: int, jobs: int, tps: float, waves: int = 10
) -> Delivery:
    sim.handle.reset()
    sim.handle.configure(stream_tps=tps, record_stream_times=True, latency=FIRST_BYTE_S)
    prompts = [f"delivery {i} {uuid.uuid4().hex}" for i in range(jobs)]
    sampler = Sampler(worker.pid)
    per_wave = -(-jobs // waves)

    async def run() -> list[Received]:
        tasks: list[asyncio.Task[Received]] = []
        for start in range(0, jobs, per_wave):
            ids = await asyncio.to_thread(submit_streamed, url, prompts[start : start + per_wave])
            tasks += [asyncio.create_task(read_stream(url, API_KEY, job_id)) for job_id in ids]
            await asyncio.sleep(1 / tps / waves * 5)
        return await asyncio.wait_for(asyncio.gather(*tasks), 600)

    pids = {"worker": worker.pid, "api": api_pid, "simulator": sim.proc.pid,
            "redis": redis_pid(), "readers (bench)": os.getpid()}  # fmt: skip
    cpu_before = cpu_seconds(pids)
    load_before = os.getloadavg()[0]
    started = time.monotonic()
    sampler.start()
    received = asyncio.run(run())
    wall = time.monotonic() - started
    samples = sampler.stop()
    cpu_after = cpu_seconds(pids)
    cpu_share = {name: (cpu_after[name] - cpu_before[name]) / wall for name in pids}
    sim.handle.configure(latency=0)

    sent = {entry["prompt"]: entry.get("stream_times") or [] for entry in sim.handle.log()}
    delays: list[float] = []
    matched = succeeded = deltas = 0
    for prompt, got in zip(prompts, received, strict=True):
        if not got.events or got.events[-1][2] != "job.succeeded":
            continue
        succeeded += 1
        output = got.events[-1][3]["result"]["output"] or ""
        texts = [(at, data["text"]) for at, _, name, data in got.events if name == "output.delta"]
        deltas += len(texts)
        if "".join(text for _, text in texts) == output:
            matched += 1
        times = sent.get(prompt[:200]) or []
        delays += _piece_delays(output, texts, times)
    return Delivery(
        jobs=jobs,
        tps=tps,
        peak_in_flight=samples.peak_in_flight,
        pieces=len(delays),
        p50_ms=percentile(delays, 50) if delays else float("nan"),
        p90_ms=percentile(delays, 90) if delays else float("nan"),
        p99_ms=percentile(delays, 99) if delays else float("nan"),
        max_ms=max(delays) if delays else float("nan"),
        deltas=deltas,
        succeeded=succeeded,
        matched_output=matched,
        wall_s=wall,
        cpu_share=cpu_share,
        load=(load_before, os.getloadavg()[0]),
    )


def _piece_delays(
    output: str, texts: list[tuple[float, str]], sent_times: list[float]
) -> list[float]:
    """ms from the simulator's send of each piece (OpenAI: frame 0 is the role chunk) to
    the arrival of the delta that completed it."""
    pieces = stream_pieces(output)
    if len(sent_times) < len(pieces) + 1:
        return []
    out: list[float] = []
    received_end, index = 0, 0
    piece_end = 0
    for k, piece in enumerate(pieces):
        piece_end += len(piece)
        while index < len(texts) and received_end < piece_end:
            received_end += len(texts[index][1])
            index += 1
        if received_end < piece_end:
            break
        out.append((texts[index - 1][0] - sent_times[k + 1]) * 1000)
    return out


# ---- the run -----------------------------------------------------------------------


def worker_env() -> dict[str, str]:
    """The worker's settings: the shipped ones, but ``BENCH_STREAM_FLUSH_MS`` if set."""
    flush_ms = os.environ.get("BENCH_STREAM_FLUSH_MS")
    return {"COURIER_STREAM_FLUSH_MS": flush_ms} if flush_ms else {}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.streaming")
    parser.add_argument("--streams", type=int, default=2000, help="open streams held at once")
    parser.add_argument("--hold", type=float, default=16.0, help="seconds to hold them")
    parser.add_argument(
        "--jobs",
        type=int,
        nargs="+",
        default=[100, 300, 1000],
        help="streamed jobs in flight, one delivery cell each",
    )
    parser.add_argument("--tps", type=float, default=2.0, help="events/s of each stream")
    parser.add_argument("--cpu-jobs", type=int, default=300)
    parser.add_argument("--cpu-tps", type=float, default=20.0)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--only", choices=["streams", "delivery", "cpu"], default=None)
    args = parser.parse_args(argv)
    # stopped (timeout, kill): still stop the processes and free the DB in the finally below
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())  # the readers' loop, as the API's

    if "BENCH_REDIS_URL" not in os.environ:
        harness.REDIS_URL = claim_db()
    else:
        flush(harness.REDIS_URL)
    sim = Simulator(0)
    api, url = start_api(sim)
    results: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    try:
        if args.only in (None, "streams"):
            results["streams"] = open_streams(api.pid, url, args.streams, args.hold)
            print(results["streams"], flush=True)
        worker = start_courier_worker(sim, env=worker_env())
        try:
            if args.only in (None, "delivery"):
                results["delivery"] = []
                for jobs in args.jobs:
                    cell = delivery(sim, url, worker, api.pid, jobs, args.tps)
                    results["delivery"].append(cell)
                    print(cell, flush=True)
            if args.only in (None, "cpu"):
                results["cpu"] = compare_cpu(
                    sim, url, worker, args.cpu_jobs, args.cpu_tps, args.reps
                )
        finally:
            worker.stop(timeout=10)
    finally:
        api.stop()
        sim.stop()
        flush(harness.REDIS_URL)  # the claim's lock too: the DB is free again
    write_results(results, args)


def write_results(results: dict[str, Any], args: argparse.Namespace) -> None:
    from bench.streaming_report import render

    text = render(results, args)
    if args.only is None:
        RESULTS.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
