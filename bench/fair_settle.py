"""The fair order's true-up of estimated tokens (README, *Fair share between tenants*):
``python -m bench.fair_settle --baseline-ref REF`` (``make bench-fair-settle``, ~4 min)
writes ``bench/results-fair-settle.md``.

Tenants A and B queue 3,000 jobs each of the same prompts (~110 tokens); A asks for
``max_tokens`` 4,000, B for 60; both use ~30 (the simulator's answers are short). ``openai:*``
has a tokens-per-minute limit too high to refuse anything, so starts are charged in tokens
while the worker's slots (``-c 20``, simulator at 1 s) decide the pace. Measured: each
tenant's starts and tokens used from 5 s to 65 s, for one worker of this checkout (*fair*:
each answer trues its charge up to the tokens used, and a start is charged the tenant's
average output when it is below ``max_tokens``) and one of ``REF`` (*baseline*: charged the
estimate only), one after the other, same run, same DB.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
from datetime import UTC, datetime
from pathlib import Path

from bench.budgets import claim_quiet_db
from bench.fairness import ROOT, Submitter, checkout, run_for
from bench.harness import Simulator

RESULTS = ROOT / "bench" / "results-fair-settle.md"
ASKS = {"tenant-a": 4000, "tenant-b": 60}
LIMITS = json.dumps({"openai:*": {"tpm": 100_000_000}})


def run(sim: Simulator, source: Path) -> dict[str, tuple[int, int]]:
    """Per tenant: (starts, tokens used) from 5 s to 65 s after the worker started."""
    sim.set_latency(1.0)
    jobs = Submitter()
    mixed = [(t, "same " * 100 + str(i)) for i in range(3000) for t in ("tenant-a", "tenant-b")]
    ids = jobs.submit(mixed, ASKS)
    t0, records = run_for(sim, source, jobs, ids, 70, 20, COURIER_LIMITS=LIMITS)
    seen = {t: [0, 0] for t in ASKS}
    for r in records:
        if r.get("started_at") and t0 + 5 <= float(r["started_at"]) < t0 + 65:
            seen[r["tenant"]][0] += 1
            if r.get("status") == "succeeded":
                usage = json.loads(r["result"])["usage"]
                seen[r["tenant"]][1] += usage["input_tokens"] + usage["output_tokens"]
    return {t: (n, tokens) for t, (n, tokens) in seen.items()}


def share(row: dict[str, tuple[int, int]], index: int) -> float:
    total = sum(v[index] for v in row.values())
    return 100 * row["tenant-a"][index] / total if total else 0.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--baseline-ref", default=os.environ.get("FAIR_BASELINE_REF", "main"))
    args = parser.parse_args(argv)
    claim_quiet_db()
    sim = Simulator(0.0)
    sha = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", args.baseline_ref],
                         capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    rows = {}
    try:
        with checkout(args.baseline_ref) as baseline:
            for arm, source in (("fair", ROOT), ("baseline", baseline)):
                rows[arm] = run(sim, source)
                print(f"{arm}: {rows[arm]}", flush=True)
    finally:
        sim.stop()
    lines = [
        "# The fair order's true-up of estimated tokens",
        "",
        f"`make bench-fair-settle` ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.node()}, "
        f"load {os.getloadavg()[0]:.2f} at the end), baseline `{args.baseline_ref}` (`{sha}`). "
        "Tenants A and B, 3,000 jobs each of the same prompts, A asking `max_tokens` 4,000 "
        "and B 60, both using ~30; a TPM limit that never refuses (starts charged in tokens); "
        "one worker `-c 20`, simulator at 1 s; starts and tokens used from 5 s to 65 s.",
        "",
        "| | A's starts | B's starts | A's share of the starts | A's share of the tokens used |",
        "|---|---|---|---|---|",
    ]
    for arm, label in (
        ("fair", "trued up, charged the tenant's average output (this checkout)"),
        ("baseline", "estimate only"),
    ):
        row = rows[arm]
        lines.append(
            f"| {label} | {row['tenant-a'][0]:,} | {row['tenant-b'][0]:,} | "
            f"{share(row, 0):.1f} % | {share(row, 1):.1f} % |"
        )
    RESULTS.write_text("\n".join(lines) + "\n")
    print(f"written: {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
