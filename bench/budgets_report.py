"""The report of :mod:`bench.budgets`: its figures, and ``bench/results-budgets.md``."""

from __future__ import annotations

import argparse
import platform
import statistics
from dataclasses import dataclass, field
from datetime import UTC, datetime

import psutil

from bench.harness import percentile
from core.cost.prices import usd

MODEL = "openai:gpt-4o-mini"
MAX_TOKENS = 100


@dataclass
class Overshoot:
    jobs: int
    fits: int
    budget_nano: int
    worst_nano: int
    spent_nano: int
    succeeded: int
    refused: int
    other: int
    waits: int
    mean_true_nano: float
    seconds: float

    @property
    def unused_nano(self) -> int:
        return self.budget_nano - self.spent_nano


ARMS = ("no cost code", "cost, no budget", "cost and budget")


@dataclass
class CpuCells:
    ms_per_job: dict[str, list[float]] = field(default_factory=lambda: {a: [] for a in ARMS})

    def median(self, arm: str) -> float:
        return statistics.median(self.ms_per_job[arm])

    def ratios(self, arm: str) -> list[float]:
        """The arm's CPU per job over the no-cost arm's, round by round (the same load)."""
        base = self.ms_per_job[ARMS[0]]
        return [value / ref for value, ref in zip(self.ms_per_job[arm], base, strict=True)]


def render(over: Overshoot, cpu: CpuCells, hit_ms: list[float], miss_ms: list[float],
           args: argparse.Namespace) -> str:  # fmt: skip
    base = cpu.median(ARMS[0])
    lines = [
        "# Budgets, cost bookkeeping and the answer cache",
        "",
        f"`python -m bench.budgets --jobs {args.jobs} --fits {args.fits} --cpu-jobs "
        f"{args.cpu_jobs} --rounds {args.rounds}` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, "
        f"{psutil.cpu_count()} cores (shared), Python {platform.python_version()}.",
        "",
        "## 1. No overshoot",
        "",
        f"{over.jobs} jobs of one tenant in one `POST /v1/jobs/batch`, two worker processes "
        f"(`-c 300`), simulator at 0.3 s; `{MODEL}`, max_tokens {MAX_TOKENS}. Budget: "
        f"{over.fits} worst-case calls of ${usd(over.worst_nano):.6f} = "
        f"${usd(over.budget_nano):.6f} (period `total`).",
        "",
        "| | |",
        "|---|---:|",
        f"| true spend | ${usd(over.spent_nano):.6f} ({100 * over.spent_nano / over.budget_nano:.2f} % of the budget) |",  # noqa: E501
        f"| overshoot | **${usd(max(0, over.spent_nano - over.budget_nano)):.6f}** |",
        f"| jobs run (succeeded) | {over.succeeded} |",
        f"| jobs refused (`budget_exceeded`) | {over.refused} |",
        f"| other endings | {over.other} |",
        f"| waits for calls in flight to settle (hand-backs, `waiting_for: budget`) | {over.waits} |",  # noqa: E501
        f"| mean true cost of a call | ${usd(over.mean_true_nano):.6f} ({100 * over.mean_true_nano / over.worst_nano:.1f} % of its worst case) |",  # noqa: E501
        f"| left unused at the end | ${usd(over.unused_nano):.6f} = {over.unused_nano / over.worst_nano:.2f} worst-case calls ({100 * over.unused_nano / over.budget_nano:.2f} % of the budget) |",  # noqa: E501
        f"| wall time | {over.seconds:.1f} s |",
        "",
        "A job is refused only when its worst case no longer fits what is left once every call "
        "in flight has settled; while calls in flight might still give back enough, it waits "
        "(handed back, no slot held). So the budget left unused at the end is less than one "
        "worst-case call: that is all the worst-case reservations cost in the end. On the way, "
        "they cap how many calls run at once near the limit (the budget holds "
        f"{over.fits} worst cases at a time while the true cost of a call is a fraction of it).",
        "",
        "## 2. Worker CPU per job",
        "",
        f"{args.cpu_jobs} jobs per arm and round at 0 s latency, the three arms' workers "
        "(`-c 1000` each) running at once on interleaved jobs, so that each round's load is "
        "the same for all; ms of worker CPU per job (user + system):",
        "",
        "| arm | rounds | median | ÷ no cost code, round by round | median ratio |",
        "|---|---|---:|---|---:|",
    ]
    for arm in ARMS:
        values = ", ".join(f"{v:.3f}" for v in cpu.ms_per_job[arm])
        ratios = cpu.ratios(arm)
        lines.append(
            f"| {arm} | {values} | {cpu.median(arm):.3f} | "
            f"{', '.join(f'{r:.3f}' for r in ratios)} | **{statistics.median(ratios):.3f}x** |"
        )
    lines += [
        "",
        "The medians' ratio (cost and budget over no cost code) is "
        f"{cpu.median(ARMS[2]) / base:.3f}x; the round-by-round ratio compares cells that ran "
        "at the same time, under the same load.",
        "",
        "Target: the budget and cost bookkeeping add at most 5 % to worker CPU per job.",
        "",
        "## 3. Cache hit",
        "",
        f'`POST /v1/jobs` with `"cache": {{"ttl_s": 3600}}` answered from the cache '
        f"({len(hit_ms)} submissions, one at a time): the answer is the job, already succeeded.",
        "",
        "| | p50 | p95 |",
        "|---|---:|---:|",
        f"| hit: submit → succeeded | **{percentile(hit_ms, 50):.2f} ms** | {percentile(hit_ms, 95):.2f} ms |",  # noqa: E501
        f"| miss at 0 s: submit → succeeded (`?wait=`) | {percentile(miss_ms, 50):.2f} ms | {percentile(miss_ms, 95):.2f} ms |",  # noqa: E501
        "",
        "Target: a hit's p50 at most 10 ms.",
        "",
    ]
    return "\n".join(lines)
