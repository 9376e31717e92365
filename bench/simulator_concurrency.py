"""Can one simulator process hold 1,000 concurrent slow requests?

``python -m bench.simulator_concurrency [--requests 1000] [--latency 1] [--runs 3]``

Starts ``python -m simulator --latency 1`` as a subprocess, fires N
concurrent requests at it from a raw-asyncio HTTP/1.1 client (one connection
per request, a few microseconds of client CPU each, so the client does not
dominate as the SDKs would at ~6-9 ms per call), and reports the wall time of
the whole burst (median of ``--runs``) and the server's CPU time. Scenarios:
OpenAI chat completions (JSON) and Anthropic messages (SSE stream). Writes
``bench/results-simulator.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results-simulator.md"
TARGET_SECONDS = 2.0

SCENARIOS: dict[str, tuple[str, dict[str, str], dict[str, object]]] = {
    "openai chat (JSON)": (
        "/v1/chat/completions",
        {"authorization": "Bearer bench-key"},
        {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello there"}]},
    ),
    "anthropic messages (SSE stream)": (
        "/v1/messages",
        {"x-api-key": "bench-key"},
        {
            "model": "claude-sonnet-4",
            "max_tokens": 100,
            "stream": True,
            "messages": [{"role": "user", "content": "Hello there"}],
        },
    ),
}


@dataclass
class Run:
    wall: float
    ok: int
    failed: int
    server_cpu: float


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def build_request(port: int, path: str, headers: dict[str, str], body: dict[str, object]) -> bytes:
    payload = json.dumps(body).encode()
    lines = [
        f"POST {path} HTTP/1.1",
        f"host: 127.0.0.1:{port}",
        "content-type: application/json",
        f"content-length: {len(payload)}",
        "connection: close",
        *(f"{k}: {v}" for k, v in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + payload


async def one_request(port: int, raw: bytes) -> int:
    """Send one request on its own connection; read to EOF; return the status code."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        response = await reader.read(-1)  # connection: close, so EOF ends the response
    finally:
        writer.close()
    return int(response.split(b" ", 2)[1]) if response else 0


async def burst(port: int, raw: bytes, n: int) -> tuple[float, list[int | BaseException]]:
    started = time.perf_counter()
    results = await asyncio.gather(
        *(one_request(port, raw) for _ in range(n)), return_exceptions=True
    )
    return time.perf_counter() - started, list(results)


def run_burst(port: int, raw: bytes, n: int) -> tuple[float, list[int | BaseException]]:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(burst(port, raw, n))
    return uvloop.run(burst(port, raw, n))


def run_scenario(port: int, server: psutil.Process, name: str, n: int, runs: int) -> list[Run]:
    path, headers, body = SCENARIOS[name]
    raw = build_request(port, path, headers, body)
    out: list[Run] = []
    for _ in range(runs):
        httpx.post(f"http://127.0.0.1:{port}/_sim/reset", timeout=10).raise_for_status()
        cpu_before = sum(server.cpu_times()[:2])
        wall, results = run_burst(port, raw, n)
        cpu = sum(server.cpu_times()[:2]) - cpu_before
        ok = sum(1 for r in results if r == 200)
        out.append(Run(wall=wall, ok=ok, failed=n - ok, server_cpu=cpu))
        print(f"  {name}: {n} requests in {wall:.3f}s wall, ok={ok}, server CPU {cpu:.3f}s")
    return out


def start_simulator(port: int, latency: float) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "simulator", "--port", str(port), "--latency", str(latency)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/_sim/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("simulator did not start")


def write_results(n: int, latency: float, results: dict[str, list[Run]]) -> str:
    lines = [
        "# Simulator concurrency",
        "",
        f"`python -m bench.simulator_concurrency --requests {n} --latency {latency}` — "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}. One simulator process (uvicorn + uvloop + "
        "httptools); a raw-asyncio client opens one connection per request, all at once.",
        "",
        f"Target: {n} concurrent {latency:g} s requests in well under {TARGET_SECONDS:g} s wall.",
        "",
        "| scenario | runs | median wall (s) | min / max (s) | ok / failed | server CPU (s) |",
        "|---|---|---|---|---|---|",
    ]
    for name, runs in results.items():
        walls = [r.wall for r in runs]
        lines.append(
            f"| {name} | {len(runs)} | {statistics.median(walls):.3f} | "
            f"{min(walls):.3f} / {max(walls):.3f} | {sum(r.ok for r in runs)} / "
            f"{sum(r.failed for r in runs)} | {statistics.median(r.server_cpu for r in runs):.3f} |"
        )
    lines += [
        "",
        "Wall time beyond the latency is the server's per-request CPU (parsing, reply "
        "generation, JSON/SSE rendering) plus connection set-up for the burst.",
        "",
    ]
    text = "\n".join(lines)
    RESULTS.write_text(text)
    return text


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.simulator_concurrency")
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--latency", type=float, default=1.0)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    port = free_port()
    proc = start_simulator(port, args.latency)
    try:
        server = psutil.Process(proc.pid)
        results = {
            name: run_scenario(port, server, name, args.requests, args.runs) for name in SCENARIOS
        }
    finally:
        proc.terminate()
        proc.wait(10)
    print()
    print(write_results(args.requests, args.latency, results))
    worst = max(statistics.median(r.wall for r in runs) for runs in results.values())
    failed = sum(r.failed for runs in results.values() for r in runs)
    if failed or worst >= TARGET_SECONDS:
        raise SystemExit(f"FAILED: {failed} failed requests, worst median wall {worst:.3f}s")


if __name__ == "__main__":
    main()
