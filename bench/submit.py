"""Single submissions and reads against the framework's own floor, side by side in one run.

``python -m bench.submit [--rounds 3] [--seconds 8] [--connections 32]`` (``make bench-submit``)

Four cells, each driven by ``wrk -t1 -c<connections>`` for ``--seconds``, in rounds that
alternate them (the machine is shared: only figures of the same round are compared):

- floor POST: :mod:`bench.submit_floor` (a minimal FastAPI endpoint on the same uvicorn that
  validates a small pydantic body and does one ``HSET`` and one ``LPUSH`` with
  ``redis.asyncio``) — the framework's own floor;
- Courier POST: ``POST /v1/jobs`` of ``courier api`` with every guarantee on (API key, the
  tenant's submission rate and unfinished-jobs cap checked — set high enough not to refuse —
  idempotency keys on half the requests, audit, metrics);
- floor GET: one ``HGETALL``; Courier GET: ``GET /v1/jobs/{id}`` of a queued job (its queue
  position and estimated start included).

Rates are requests/s answered 2xx; API CPU per request is the process's user + system CPU
(psutil) over the cell ÷ requests. Writes ``bench/results-submit.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psutil

from bench.redis_db import claim_db, release_db
from tests.support.procs import Proc, free_port, python_module, wait_http

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results-submit.md"
REDIS = "redis://127.0.0.1:6379/{db}"
API_KEY = "bench-submit-key"
BODY = {
    "model": "openai:gpt-4o-mini",
    "request": {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 20},
}
CELLS = ("floor POST", "Courier POST", "floor GET", "Courier GET")


def lua(method: str, body: dict[str, object] | None, idempotent: bool = False) -> str:
    """A wrk script: the request, and (POST) an Idempotency-Key on every other request, each
    key new (a first submission, never a replay)."""
    lines = [
        f'wrk.method = "{method}"',
        'wrk.headers["Authorization"] = "Bearer ' + API_KEY + '"',
    ]
    if body is not None:
        lines += [
            "wrk.body = [[" + json.dumps(body) + "]]",
            'wrk.headers["Content-Type"] = "application/json"',
        ]
    if idempotent:
        lines += [
            "local n = 0",
            "local tag = tostring(os.time()) .. '-' .. tostring(math.random(1, 1e9))",
            "request = function()",
            "  n = n + 1",
            '  local headers = {["Authorization"] = wrk.headers["Authorization"],',
            '                   ["Content-Type"] = "application/json"}',
            "  if n % 2 == 0 then headers['Idempotency-Key'] = tag .. '-' .. n end",
            "  return wrk.format(nil, nil, headers, nil)",
            "end",
        ]
    return "\n".join(lines) + "\n"


@dataclass
class Measured:
    rate: float  # 2xx answers per second
    cpu_ms: float  # API CPU per answer
    errors: int  # non-2xx answers and socket errors


def drive(url: str, script: str, seconds: float, connections: int, pid: int) -> Measured:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(script)
    proc = psutil.Process(pid)
    before = proc.cpu_times()
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{round(seconds)}s", "-s", f.name, url],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    after = proc.cpu_times()
    os.unlink(f.name)
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    elapsed = float(re.search(r"requests in ([\d.]+)s", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = int(bad.group(1)) if bad else 0
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors += sum(int(g) for g in sock.groups()) if sock else 0
    cpu = (after.user + after.system) - (before.user + before.system)
    good = max(1, total - errors)
    return Measured(good / elapsed, cpu * 1000 / good, errors)


def start(args: list[str], env: dict[str, str], name: str, health: str) -> tuple[Proc, str]:
    port = free_port()
    proc = python_module(*args, "--port", str(port), env=env, name=name)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + health, timeout=30)
    except TimeoutError:
        proc.stop()
        raise RuntimeError(f"{name} did not start:\n{proc.output()[-3000:]}") from None
    return proc, url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--only", default="", help="comma-separated cells (a quick look)")
    opts = parser.parse_args()
    url = claim_db()
    env = {
        "COURIER_REDIS_URL": url,
        "FLOOR_REDIS_URL": url,
        "COURIER_API_KEYS": f"bench:{API_KEY}",
        # The quotas stay on (each submission is checked against them) but never refuse.
        "COURIER_TENANT_SUBMIT_RATE": "1000000",
        "COURIER_TENANT_SUBMIT_BURST": "1000000",
        "COURIER_TENANT_MAX_UNFINISHED": "1000000000",
        "PYTHONUNBUFFERED": "1",
    }
    floor, floor_url = start(
        ["uvicorn", "bench.submit_floor:app", "--log-level", "warning"], env, "floor",
        "/docs",
    )  # fmt: skip
    api, api_url = start(["producers.cli", "api", "--log-level", "warning"], env, "api", "/healthz")
    try:
        headers = {"Authorization": f"Bearer {API_KEY}"}
        job = httpx.post(f"{api_url}/v1/jobs", json=BODY, headers=headers).json()
        item = httpx.post(f"{floor_url}/floor/jobs", json=BODY).json()
        targets = {
            "floor POST": (floor, f"{floor_url}/floor/jobs", lua("POST", BODY)),
            "Courier POST": (api, f"{api_url}/v1/jobs", lua("POST", BODY, idempotent=True)),
            "floor GET": (floor, f"{floor_url}/floor/jobs/{item['id']}", lua("GET", None)),
            "Courier GET": (api, f"{api_url}/v1/jobs/{job['id']}", lua("GET", None)),
        }
        if opts.only:
            targets = {k: v for k, v in targets.items() if k in opts.only.split(",")}
        for proc, target, script in targets.values():  # warm up
            drive(target, script, 2, opts.connections, proc.pid)
        rounds: list[dict[str, Measured]] = []
        for i in range(opts.rounds):
            cells = {}
            for name, (proc, target, script) in targets.items():
                cells[name] = drive(target, script, opts.seconds, opts.connections, proc.pid)
                print(f"round {i + 1} {name}: {cells[name]}", flush=True)
            rounds.append(cells)
        if not opts.only:
            write(rounds, opts)
    finally:
        api.stop()
        floor.stop()
        release_db(url)


def write(rounds: list[dict[str, Measured]], opts: argparse.Namespace) -> None:
    def med(name: str, attr: str) -> float:
        return statistics.median(getattr(r[name], attr) for r in rounds)

    def ratios(ours: str, floor: str) -> list[float]:
        return [r[ours].rate / r[floor].rate for r in rounds]

    def cpu_ratios(ours: str, floor: str) -> list[float]:
        return [r[floor].cpu_ms / r[ours].cpu_ms for r in rounds]

    post, get = ratios("Courier POST", "floor POST"), ratios("Courier GET", "floor GET")
    post_cpu = cpu_ratios("Courier POST", "floor POST")
    get_cpu = cpu_ratios("Courier GET", "floor GET")
    load = os.getloadavg()
    lines = [
        "# Single submissions and reads against the framework's floor",
        "",
        f"`make bench-submit` ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.node()}, "
        f"{psutil.cpu_count()} cores, load {load[0]:.2f} at the end; Python "
        f"{platform.python_version()}). `wrk -t1 -c{opts.connections}`, {opts.seconds:g} s "
        f"per cell, {opts.rounds} rounds alternating the cells; one API process each "
        "(uvicorn, uvloop, httptools), Redis on the same machine.",
        "",
        "- floor POST: a minimal FastAPI endpoint that validates a small pydantic body and "
        "does one `HSET` and one `LPUSH` with `redis.asyncio` (`bench/submit_floor.py`);",
        "- Courier POST: `POST /v1/jobs` with every guarantee on (the tenant's rate and "
        "unfinished-jobs cap checked, an `Idempotency-Key` on every other request, audit "
        "trail and metrics);",
        "- floor GET: one `HGETALL`; Courier GET: `GET /v1/jobs/{id}` of a queued job (with "
        "its queue position and estimated start).",
        "",
        "| cell | requests/s (median) | per round | API CPU per request (ms, median) | non-2xx |",
        "|---|---|---|---|---|",
    ]
    for name in CELLS:
        per = ", ".join(f"{r[name].rate:,.0f}" for r in rounds)
        errors = sum(r[name].errors for r in rounds)
        lines.append(
            f"| {name} | {med(name, 'rate'):,.0f} | {per} | {med(name, 'cpu_ms'):.2f} | {errors} |"
        )
    lines += [
        "",
        "Ratios are taken within each round (the two cells ran back to back), then the "
        "median; CPU ratio = the floor's CPU per request / Courier's.",
        "",
        "| ratio to the floor | rate: median | rate: per round | CPU: median | CPU: per round |",
        "|---|---|---|---|---|",
        _ratio_row("`POST /v1/jobs`", post, post_cpu),
        _ratio_row("`GET /v1/jobs/{id}`", get, get_cpu),
        "",
    ]
    RESULTS.write_text("\n".join(lines))
    print("\n".join(lines))


def _ratio_row(name: str, rates: list[float], cpus: list[float]) -> str:
    def listed(values: list[float]) -> str:
        return ", ".join(f"{x:.2f}x" for x in values)

    return (
        f"| {name} | {statistics.median(rates):.2f}x | {listed(rates)} | "
        f"{statistics.median(cpus):.2f}x | {listed(cpus)} |"
    )


if __name__ == "__main__":
    sys.exit(main())
