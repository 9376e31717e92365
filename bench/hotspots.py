"""Summarise a ``py-spy record --gil -f raw`` file: where a worker spends its CPU.

Each raw line is ``frame;frame;...;leaf count`` with frames ``function (path:line)``.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

FRAME = re.compile(r"^(?P<func>.*?) \((?P<path>[^()]+?)(?::\d+)?\)$")
COURIER_PACKAGES = ("workers", "tasks", "producers", "config", "bench")
# What a worker does per job: (name, frames that mark it, frames that rule it out).
# Inclusive, so categories can overlap (a task-received event is sent from the consumer loop).
COMPONENTS: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = (
    ("provider call (adapter, OpenAI SDK, httpx2, parse)", ("OpenAIProvider.complete (",), ()),
    ("consumer loop: BRPOP, decode, dispatch", ("synloop (",), ()),
    ("task events (-E): publish", ("EventDispatcher.send (",), ()),
    ("Celery trace around the task body", ("trace_task (",), ("run_job (",)),
    ("job store scripts (claim, finish; begin_attempt on retries)", ("JobStore.",), ()),
    ("broker ack", ("QoS.ack (",), ()),
    ("redis.Redis() built per kombu op", ("Redis.__init__ (",), ()),
    ("circuit breaker", ("RateBreaker.",), ()),
    ("worker metrics (outside the call)", ("workers/metrics.py",), ("Provider.complete (",)),
    ("logging", ("Logger._log (",), ()),
    ("background loops (sweeper, leases)", ("Sweeper.", "Leases."), ()),
    ("gevent hub: poll, timers, wake-ups", ("Hub.run (",), ("apply_target (", "synloop (")),
)


@dataclass
class Hotspots:
    samples: int
    self_by_function: list[tuple[str, int]]
    by_component: list[tuple[str, int]]
    self_by_package: list[tuple[str, int]]


def _name(frame: str) -> tuple[str, str]:
    """(``function (file)``, package) of one frame. py-spy prints paths relative to the
    entry of ``sys.path`` they were found under, so the first component is the package."""
    match = FRAME.match(frame.strip())
    if not match:
        return frame.strip(), "?"
    path = match["path"]
    first = path.split("/", 1)[0]
    if "/" not in path:
        package = first.removesuffix(".py")
    elif first in COURIER_PACKAGES:
        package = f"courier ({first})"
    else:
        package = first
    return f"{match['func']} ({path})", package


def summarise(path: Path, top: int = 12) -> Hotspots:
    own: Counter[str] = Counter()
    components: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [f for f in stack.split(";") if f and not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        total += count
        names = [_name(f) for f in frames]
        leaf, package = names[-1]
        own[leaf] += count
        packages[package] += count
        for component, marks, excluded in COMPONENTS:
            if any(m in stack for m in marks) and not any(x in stack for x in excluded):
                components[component] += count
    return Hotspots(
        total,
        own.most_common(top),
        [(name, components[name]) for name, _, _ in COMPONENTS if components[name]],
        packages.most_common(top),
    )


def to_markdown(spots: Hotspots, source: str) -> list[str]:
    def share(count: int) -> str:
        return f"{100 * count / max(spots.samples, 1):.1f} %"

    lines = [
        f"py-spy `record --gil -f raw` on the worker during {source}: {spots.samples} samples "
        "while holding the GIL (CPU, not waiting).",
        "",
        "| what the worker is doing (inclusive; categories may overlap) | share |",
        "|---|---|",
        *(f"| {name} | {share(n)} |" for name, n in spots.by_component),
        "",
        "| self time, by package | share |",
        "|---|---|",
        *(f"| {name} | {share(n)} |" for name, n in spots.self_by_package),
        "",
        "| self time, by function | share |",
        "|---|---|",
        *(f"| `{name}` | {share(n)} |" for name, n in spots.self_by_function),
    ]
    return lines
