"""``courier fair``: the fair order between tenants as it stands (README, *Fair share between
tenants*): per priority, the tenants with jobs sorted and waiting, the next to start first."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from config.celery import PRIORITIES
from config.settings import get_settings
from core.fair import fair_state
from producers.cli_clients import configured_redis


def fair(json_: Annotated[bool, typer.Option("--json", help="One JSON object")] = False) -> None:
    """Show the tenants waiting in each priority, in the order they start next."""
    rows = fair_state(configured_redis(), PRIORITIES, get_settings().tenant_weights)
    if json_:
        typer.echo(json.dumps({"tenants": rows}))
        return
    if not rows:
        typer.echo("no tenant has jobs waiting in the fair order")
        return
    typer.echo(f"{'priority':<8}  {'tenant':<24}  {'weight':>7}  {'waiting':>8}  {'lag':>10}  "
               f"{'started':>9}")  # fmt: skip
    for row in rows:
        typer.echo(
            f"{row['priority']:<8}  {row['tenant']!s:<24}  {row['weight']:>7g}  "
            f"{row['waiting']:>8}  {row['lag']:>10g}  {row['started']:>9}"
        )
