"""Courier's worker app with the runner's cost and budget step taken out: the baseline of the
CPU cells of :mod:`bench.budgets` (``celery -A bench.nocost_app worker``). Never shipped."""

from __future__ import annotations

from core.celery_app import app
from workers import app as _worker_app  # noqa: F401  (the worker's patches and intake)
from workers.run import wiring
from workers.runtime import Runtime


def _no_spending(runtime: Runtime) -> None:
    return None


wiring.build_spending = _no_spending  # type: ignore[assignment]

__all__ = ["app"]
