"""The call pool against calls held in Celery's tasks, in the same run: memory per call in
flight (1,000 jobs at 5 s) and worker CPU per job, cells alternating between the two."""

from __future__ import annotations

import statistics
import traceback
from collections.abc import Callable

from bench.scenarios import Cell

MODES = (("call pool", "true"), ("call in the task", "false"))
MEMORY_TARGET_KB = 50.0


def compare_pool(run_cell: Callable[[dict[str, str]], Cell], reps: int) -> list[Cell]:
    """``reps`` cells of each mode, alternating; each cell's note names its mode."""
    cells: list[Cell] = []
    for _ in range(reps):
        for name, value in MODES:
            try:
                cell = run_cell({"COURIER_WORKER_CALL_POOL": value})
            except Exception as exc:
                traceback.print_exc()
                cell = Cell("courier", 5.0, 0, note=f"error: {exc!r}"[:200])
            cell.note = name + (f"; {cell.note}" if cell.note else "")
            cells.append(cell)
            print(
                f"{name}: {cell.kb_per_in_flight or 0:.1f} KB per in-flight job, "
                f"{cell.cpu_ms_per_job or 0:.2f} ms CPU per job",
                flush=True,
            )
    return cells


def _median(cells: list[Cell], mode: str, value: Callable[[Cell], float | None]) -> float | None:
    values = [v for c in cells if c.note.startswith(mode) and (v := value(c)) is not None]
    return statistics.median(values) if values else None


def pool_table(cells: list[Cell]) -> list[str]:
    lines = [
        "| cell | latency (s) | jobs | peak in-flight | RSS idle → peak (MB) "
        "| KB per in-flight job | worker CPU per job (ms) |",
        "|---|---|---|---|---|---|---|",
    ]
    for cell in cells:
        rss = (
            f"{(cell.rss_idle or 0) / 2**20:.0f} → {(cell.rss_peak or 0) / 2**20:.0f}"
            if cell.rss_peak
            else "—"
        )
        lines.append(
            f"| {cell.note} | {cell.latency:g} | {cell.jobs} | {cell.peak_in_flight or '—'} "
            f"| {rss} | {cell.kb_per_in_flight or 0:.1f} | {cell.cpu_ms_per_job or 0:.2f} |"
        )
    pool_kb = _median(cells, MODES[0][0], lambda c: c.kb_per_in_flight)
    task_kb = _median(cells, MODES[1][0], lambda c: c.kb_per_in_flight)
    pool_cpu = _median(cells, MODES[0][0], lambda c: c.cpu_ms_per_job)
    task_cpu = _median(cells, MODES[1][0], lambda c: c.cpu_ms_per_job)
    if pool_kb and task_kb and pool_cpu and task_cpu:
        verdict = "met" if pool_kb <= MEMORY_TARGET_KB else "**not met**"
        lines += [
            "",
            f"Medians: **{pool_kb:.1f} KB** per in-flight job with the call pool (target ≤ "
            f"{MEMORY_TARGET_KB:g} KB: {verdict}) against {task_kb:.1f} KB with each call "
            f"held in its task: **{pool_kb / task_kb:.2f}x**. Worker CPU per job "
            f"{pool_cpu:.2f} ms against {task_cpu:.2f} ms ({pool_cpu / task_cpu:.2f}x).",
        ]
    return lines
