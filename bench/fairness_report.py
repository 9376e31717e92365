"""``bench/results-fairness.md`` from the figures of :mod:`bench.fairness`."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field

from bench.harness import percentile


@dataclass
class Results:
    baseline_ref: str
    backlog_fair: list[float] = field(default_factory=list)
    backlog_baseline: list[float] = field(default_factory=list)
    weights: list[tuple[int, int]] = field(default_factory=list)
    # (arm, A's jobs queued first) → (A's tokens, B's tokens, A's calls, B's calls)
    tokens: dict[tuple[str, bool], tuple[int, int, int, int]] = field(default_factory=dict)
    cpu: dict[str, list[float]] = field(default_factory=lambda: {"fair": [], "baseline": []})


def _waits(name: str, waits: list[float]) -> str:
    if not waits:
        return f"| {name} | - | - | - |"
    return (
        f"| {name} | {statistics.median(waits):.2f} s | {percentile(waits, 95):.2f} s "
        f"| {max(waits):.2f} s |"
    )


def _tokens(name: str, order: str, row: tuple[int, int, int, int] | None) -> str:
    if row is None:
        return f"| {name} | {order} | - | - | - | - |"
    a, b, calls_a, calls_b = row
    share = 100 * a / (a + b) if a + b else 0.0
    return f"| {name} | {order} | {a:,} | {b:,} | {share:.1f} % | {calls_a} / {calls_b} |"


def render(results: Results) -> str:
    lines = [
        "# Fair share between tenants",
        "",
        f"`make bench-fairness` (`python -m bench.fairness`), {time.strftime('%Y-%m-%d')}, "
        "on the shared 2-core machine. *fair*: this checkout's worker; *baseline*: the same "
        f"worker at `{results.baseline_ref}` (a temporary git worktree), run one after the "
        "other in the same run. One `courier worker` (gevent), the simulator.",
        "",
        "## 1. A small tenant behind a 10,000-job backlog",
        "",
        "Tenant A: 10,000 jobs queued; `-c 100`, 1 s per call; 5 s later tenant B submits 20. "
        "B's queue wait (started_at - created_at):",
        "",
        "| worker | median | p95 | max |",
        "|---|---|---|---|",
        _waits("fair", results.backlog_fair),
        _waits("baseline", results.backlog_baseline),
    ]
    if results.backlog_fair and results.backlog_baseline:
        ratio = percentile(results.backlog_baseline, 95) / percentile(results.backlog_fair, 95)
        lines += ["", f"p95 baseline ÷ fair: {ratio:.0f}x."]
    lines += [
        "",
        "## 2. Weights 3:1, both tenants backlogged",
        "",
        "A (weight 3): 3,000 jobs, B (weight 1): 1,500, A's queued first; `-c 50`, 1 s per "
        "call. Starts per 10 s over the minute after the first 5 s:",
        "",
        "| seconds | A | B | A's share |",
        "|---|---|---|---|",
    ]
    total_a = total_b = 0
    for i, (a, b) in enumerate(results.weights):
        total_a, total_b = total_a + a, total_b + b
        share = 100 * a / (a + b) if a + b else 0.0
        lines.append(f"| {10 * i}-{10 * (i + 1)} | {a} | {b} | {share:.1f} % |")
    if total_a + total_b:
        share = 100 * total_a / (total_a + total_b)
        lines.append(f"| **minute** | **{total_a}** | **{total_b}** | **{share:.1f} %** |")
    lines += [
        "",
        "## 3. Tokens under a TPM limit",
        "",
        "`openai:*` limited to 30,000 tokens per minute; A's prompts ~1,000 tokens, B's ~100 "
        "(`max_tokens` 16), A 600 jobs, B 3,000, submitted interleaved or with A's queued "
        "first; `-c 1000`, 0.2 s per call. Tokens (the provider's `usage`) of the calls "
        "answered from 15 s to 75 s, after the bucket's first burst; a fair share is 50 %:",
        "",
        "| worker | submitted | A's tokens | B's tokens | A's share | calls A / B |",
        "|---|---|---|---|---|---|",
        *(
            _tokens(
                arm, "A first" if a_first else "interleaved", results.tokens.get((arm, a_first))
            )
            for a_first in (False, True)
            for arm in ("fair", "baseline")
        ),
        "",
        "## 4. Worker CPU per job",
        "",
        "2,000 jobs of 4 tenants per round at 0 s latency, `-c 100`, after 200 warm-up jobs; "
        "the arms alternate first.",
        "",
        "| worker | rounds (ms per job) | median |",
        "|---|---|---|",
    ]
    for arm in ("fair", "baseline"):
        values = results.cpu[arm]
        shown = ", ".join(f"{v:.2f}" for v in values) or "-"
        median = f"{statistics.median(values):.2f} ms" if values else "-"
        lines.append(f"| {arm} | {shown} | {median} |")
    if results.cpu["fair"] and results.cpu["baseline"]:
        ratio = statistics.median(results.cpu["fair"]) / statistics.median(results.cpu["baseline"])
        lines += ["", f"Median fair ÷ baseline: {ratio:.2f}x."]
    return "\n".join(lines) + "\n"
