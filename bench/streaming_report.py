"""``bench/results-streaming.md`` from one run of :mod:`bench.streaming`."""

from __future__ import annotations

import argparse
import statistics
from typing import Any


def _verdict(met: bool) -> str:
    return "met" if met else "**not met**"


def render(results: dict[str, Any], args: argparse.Namespace) -> str:
    lines = [
        "# Live events and streaming: measured",
        "",
        f"One run of `make bench-stream` (`python -m bench.streaming`) on {results['date']}, "
        "this 2-core shared machine: Redis, the simulator, one API process, one worker "
        "(`courier worker`, `-c 1000`) and the bench's own SSE readers (raw asyncio "
        "connections, `bench/sse.py`) all on the same two cores.",
        "",
    ]
    streams = results.get("streams")
    if streams is not None:
        lines += [
            "## Open event streams on one API process",
            "",
            "| streams | open after the hold | API RSS before | with the streams open | per stream "
            "| submit p50 before | submit p50 with streams open | with a keep-alive | "
            "ended with `job.cancelled` |",
            "|---|---|---|---|---|---|---|---|---|",
            f"| {streams.streams} | {streams.opened} | {streams.rss_before_mb:.0f} MB | "
            f"{streams.rss_open_mb:.0f} MB | **{streams.kb_per_stream:.1f} KB** | "
            f"{streams.submit_ms_before:.1f} ms | {streams.submit_ms_open:.1f} ms | "
            f"{streams.with_keepalive} | {streams.ended_cancelled} |",
            "",
            f"Target ≥ 2,000 open streams: {_verdict(streams.opened >= 2000)}. The streams "
            f"followed queued jobs (no worker running) and were held {streams.held_s:.0f} s "
            "(past the 15 s keep-alive); then every job was cancelled. Submissions are 50 "
            "sequential `POST /v1/jobs` timed before the streams opened and while they were "
            "open.",
            "",
        ]
    cells_delivery = results.get("delivery") or []
    if cells_delivery:
        lines += [
            "## Delivery delay: provider chunk → SSE reader",
            "",
            "| streamed jobs | peak in flight | events/s per stream | text pieces timed | "
            "p50 | p90 | p99 | max | succeeded | deltas = output | load avg (1 min) | "
            "CPU: worker / API / simulator / Redis / readers |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for d in cells_delivery:
            share = " / ".join(f"{v:.2f}" for v in d.cpu_share.values())
            lines.append(
                f"| {d.jobs} | {d.peak_in_flight} | {d.tps:g} | {d.pieces} | "
                f"**{d.p50_ms:.1f} ms** | {d.p90_ms:.1f} ms | **{d.p99_ms:.1f} ms** | "
                f"{d.max_ms:.1f} ms | {d.succeeded} | {d.matched_output} | "
                f"{d.load[0]:.1f} → {d.load[1]:.1f} | {share} |"
            )
        big = [d for d in cells_delivery if d.peak_in_flight >= 1000] or cells_delivery[-1:]
        met = all(d.p50_ms <= 20 and d.p99_ms <= 100 for d in big)
        lines += [
            "",
            f"Target p50 ≤ 20 ms and p99 ≤ 100 ms with 1,000 streamed jobs in flight: "
            f"{_verdict(met)}. Each piece of text: the time its `output.delta` reached the "
            "reader minus the time the simulator wrote its chunk (both `time.time()` on this "
            "machine). The jobs were submitted in ten waves (so that the streams' chunks do "
            "not all fall in the same instant), each job's event stream opened as it was "
            "submitted, before its first text (the simulator took 1 s to the first byte); "
            "every delay counts, none is left out. In flight: `courier:running` sampled "
            "every 50 ms. CPU: each process's CPU seconds ÷ the cell's wall seconds (1.00 = "
            "one core); the load average is the whole machine's, other engineers' test runs "
            "included.",
            "",
        ]
    cells = results.get("cpu")
    if cells:
        median = statistics.median(cell.ratio for cell in cells)
        lines += [
            "## Worker CPU per streamed job vs a bare streaming SDK call",
            "",
            "| cell | bare before (ms) | worker per job (ms) | bare after (ms) | worker ÷ bare |",
            "|---|---|---|---|---|",
        ]
        for i, cell in enumerate(cells, 1):
            lines.append(
                f"| {i}: {args.cpu_jobs} jobs at {args.cpu_tps:g} events/s | "
                f"{cell.bare_before_ms:.2f} | {cell.worker_ms:.2f} | {cell.bare_after_ms:.2f} | "
                f"{cell.ratio:.2f}x |"
            )
        lines += [
            f"| **median** | | | | **{median:.2f}x** (target ≤ 1.5x: {_verdict(median <= 1.5)}) |",
            "",
            "Worker: the jobs submitted at once through the API (no event reader open), the "
            "worker's user+sys CPU (psutil, all threads) from the submission to the last "
            "ending ÷ jobs: the whole job path (intake, claim, the streamed call, the "
            "batched deltas, the ending). Bare: as many concurrent "
            '`chat.completions.create(stream=True, stream_options={"include_usage": True})` '
            "calls read to their end in a fresh gevent-patched interpreter "
            "(`bench/bare_stream.py`), `time.process_time()` ÷ calls, run before and after "
            "each cell against the same paced simulator.",
            "",
        ]
    return "\n".join(lines)
