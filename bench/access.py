"""Access control's costs: the audit log's bytes per entry in Redis, and the CPU of the
steps a token request and a token-authenticated request add.

``python -m bench.access [--entries 10000,200000] [--repeat 5]``

- Audit log: ``AuditLog.append`` (the API's own code) fills one tenant's stream with
  entries shaped like the API's (a request id, an IPv4 address, a client id, a job id,
  varied actions and statuses); bytes per entry = ``MEMORY USAGE`` of the stream ÷ its
  length, at each size; the stream is capped at ``COURIER_AUDIT_MAX_ENTRIES`` (default
  200,000), so the largest size is the most one tenant's log holds.
- A token request's secret check (scrypt, N=2^14, r=8, p=1), a token's signing and its
  verification (PyJWT, HS256): medians of ``--repeat`` rounds.

Uses a free DB of the local Redis, claimed as the test suite claims its DBs (so neither
flushes the other's). Writes ``bench/results-access.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import secrets
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path

import redis
import redis.asyncio as aioredis

from bench.redis_db import LOCK_KEY, claim_db
from core import keys
from producers.api.access.clients import _hash
from producers.api.access.tokens import Tokens
from producers.api.auditlog import AuditLog

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results-access.md"
REDIS = "redis://127.0.0.1:6379/{db}"
ACTIONS = ["job.submit", "job.submit", "job.submit", "job.cancel", "auth.token", "auth.denied"]


def entry(i: int) -> dict[str, object]:
    return {
        "request_id": "req_" + secrets.token_hex(10),
        "client_ip": f"10.{i % 256}.{(i // 256) % 256}.{i % 200 + 1}",
        "actor": "cli_" + secrets.token_hex(10),
        "action": ACTIONS[i % len(ACTIONS)],
        "status": 202 if i % 6 < 3 else 200,
        "duration_ms": round(3 + (i % 97) / 10, 1),
        "job_id": f"job_01JD{secrets.token_hex(11).upper()}" if i % 6 < 4 else None,
    }


async def audit_bytes(url: str, sizes: list[int]) -> list[tuple[int, int, float, float]]:
    """(entries, bytes, bytes per entry, median µs per append) at each size."""
    client = aioredis.Redis.from_url(url, decode_responses=True)
    log = AuditLog(client, retention_s=90 * 24 * 3600, max_entries=max(sizes))
    tenant = f"bench-{os.getpid()}"
    await client.delete(keys.audit(tenant))
    rows = []
    written = 0
    per_append: list[float] = []
    try:
        for size in sorted(sizes):
            while written < size:
                started = time.perf_counter()
                await log.append(tenant, entry(written))
                per_append.append((time.perf_counter() - started) * 1e6)
                written += 1
            used = int(await client.memory_usage(keys.audit(tenant), samples=0) or 0)
            length = int(await client.xlen(keys.audit(tenant)))
            rows.append((length, used, used / length, statistics.median(per_append)))
    finally:
        await client.delete(keys.audit(tenant))
        await client.aclose()
    return rows


def crypto_costs(repeat: int) -> dict[str, float]:
    """Median µs of: the scrypt secret check, a token's signing, its verification."""
    tokens = Tokens({"k1": secrets.token_urlsafe(48)}, "courier", "courier-api", 3600)
    salt, secret = secrets.token_bytes(16), "cs_" + secrets.token_urlsafe(32)

    def median_us(step: object, n: int) -> float:
        rounds = []
        for _ in range(repeat):
            started = time.perf_counter()
            for _ in range(n):
                step()  # type: ignore[operator]
            rounds.append((time.perf_counter() - started) / n * 1e6)
        return statistics.median(rounds)

    token = tokens.issue("cli_0", "t1", "user", ["jobs:write", "jobs:read"])
    return {
        "scrypt secret check": median_us(lambda: _hash(secret, salt), 5),
        "token signing (HS256)": median_us(
            lambda: tokens.issue("cli_0", "t1", "user", ["jobs:write"]), 500
        ),
        "token verification (HS256)": median_us(lambda: tokens.verify(token), 500),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", default="10000,200000")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    sizes = [int(s) for s in args.entries.split(",")]
    started = time.time()
    load_before = os.getloadavg()
    url = claim_db()
    try:
        audit = asyncio.run(audit_bytes(url, sizes))
        server = redis.Redis.from_url(url).info("server")
    finally:
        redis.Redis.from_url(url).delete(LOCK_KEY)
    costs = crypto_costs(args.repeat)
    lines = [
        "# Access control: audit log memory and token costs",
        "",
        "Reproduce: `python -m bench.access` (a free DB of the local Redis).",
        "",
        f"- date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {time.time() - started:.0f} s",
        f"- machine: {os.cpu_count()} CPUs, load average before "
        f"{' / '.join(f'{x:.2f}' for x in load_before)}; Python {platform.python_version()}; "
        f"Redis {server.get('redis_version')}",
        "",
        "## Audit log (one tenant's stream, `COURIER_AUDIT_MAX_ENTRIES` 200,000 by default)",
        "",
        "| entries | MEMORY USAGE (bytes) | bytes per entry | append, median (µs) |",
        "|---|---|---|---|",
    ]
    for length, used, per_entry, append_us in audit:
        lines.append(f"| {length:,} | {used:,} | {per_entry:.0f} | {append_us:.0f} |")
    lines += [
        "",
        "## Token costs (median of rounds, wall-clock µs in one thread; load inflates them)",
        "",
        "| step | µs |",
        "|---|---|",
        *(f"| {name} | {us:,.0f} |" for name, us in costs.items()),
        "",
    ]
    RESULTS.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
