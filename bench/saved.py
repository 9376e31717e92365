"""The measurements of a run as JSON (``bench/results.json``), so that a partial run
(``--update``) can replace some sections and the report be rendered again whole."""

from __future__ import annotations

import json
from dataclasses import asdict, fields
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.bare import CpuComparison, CpuRep
from bench.idle import IdleOverhead
from bench.priority import PriorityResult
from bench.report import Run
from bench.scenarios import Cell

SECTIONS = ("probe", "cpu", "pool", "idle", "courier", "scale", "priority", "baseline")


def to_json(run: Run) -> dict[str, Any]:
    data = asdict(run)
    data["started"] = run.started.isoformat()
    return data


def from_json(data: dict[str, Any]) -> Run:
    values: dict[str, Any] = {f.name: data.get(f.name) for f in fields(Run)}
    values["started"] = datetime.fromisoformat(data["started"])
    values["courier"] = [Cell(**c) for c in data["courier"]]
    values["baseline"] = [Cell(**c) for c in data["baseline"]]
    values["pool"] = [Cell(**c) for c in data.get("pool") or []]
    if cpu := data.get("cpu"):
        values["cpu"] = CpuComparison(cpu["jobs"], cpu["calls"], [CpuRep(**r) for r in cpu["reps"]])
    values["priority"] = PriorityResult(**data["priority"]) if data.get("priority") else None
    values["idle"] = IdleOverhead(**data["idle"]) if data.get("idle") else None
    values["probe"] = [tuple(p) for p in data.get("probe") or [] if len(p) == 4]
    values["submit_batch"] = values["submit_batch"] or 0
    values["load_before"] = tuple(data["load_before"])
    values["load_after"] = tuple(data["load_after"])
    for name in ("hotspots", "notes", "busy_before", "busy_after", "reruns"):
        values[name] = values[name] or []
    return Run(**values)


def save(run: Run, path: Path) -> None:
    path.write_text(json.dumps(to_json(run), indent=1) + "\n")


def load(path: Path) -> Run | None:
    return from_json(json.loads(path.read_text())) if path.exists() else None


def merge(old: Run, new: Run, ran: set[str]) -> Run:
    """``old`` with the sections ``new`` ran replaced; the machine figures stay the old
    run's, and the partial run is listed under ``reruns``."""
    merged = Run(**{f.name: getattr(old, f.name) for f in fields(Run)})
    if "probe" in ran:
        merged.probe = new.probe
    if "cpu" in ran:
        merged.cpu = new.cpu
    if "pool" in ran:
        merged.pool = new.pool
    if "courier" in ran or "scale" in ran:
        merged.submit_concurrency, merged.submit_batch = new.submit_concurrency, new.submit_batch
        merged.courier = _replace_cells(old.courier, new.courier)
    if "priority" in ran:
        merged.priority = new.priority
    if "idle" in ran:
        merged.idle = new.idle
    if "baseline" in ran:
        merged.baseline = _replace_cells(old.baseline, new.baseline)
    if new.hotspots:
        merged.hotspots = new.hotspots
    load = " / ".join(f"{x:.2f}" for x in new.load_before)
    merged.reruns = [
        *old.reruns,
        f"{', '.join(s for s in SECTIONS if s in ran)} from `{new.command}` at "
        f"{new.started:%Y-%m-%d %H:%M} UTC ({new.duration_s / 60:.1f} min, load {load}; "
        f"busy: {'; '.join(new.busy_before) or 'none'})",
    ]
    return merged


def _replace_cells(old: list[Cell], new: list[Cell]) -> list[Cell]:
    """``old`` with each cell ``new`` measured again replaced, new cells added, in order."""

    def key(cell: Cell) -> tuple[int, float, int]:
        return (cell.processes, cell.latency, cell.jobs)

    fresh = {key(c): c for c in new}
    kept = [fresh.pop(key(c), c) for c in old]
    return sorted([*kept, *fresh.values()], key=key)
