"""``courier budgets``: set, show and remove tenants' budgets at run time (docs/contract.md,
Commands). The budgets live in Redis (:mod:`core.cost.ledger`); every API process and worker
applies a change to the next call."""

from __future__ import annotations

import json
import time
from typing import Annotated, Literal

import typer
from pydantic import ValidationError

from config.costs import MAX_BUDGET_USD, TenantBudget
from config.names import tenant_problem
from core.cost.ledger import Ledger
from core.cost.prices import usd
from producers.cli_clients import configured_redis

budgets_cli = typer.Typer(
    help="Tenants' budgets (USD per day, month or in total), kept in Redis.",
    no_args_is_help=True,
)


def _ledger() -> Ledger:
    return Ledger(configured_redis())


@budgets_cli.command("set")
def budgets_set(
    tenant: Annotated[str, typer.Option(help="The tenant")],
    usd_: Annotated[float, typer.Option("--usd", help=f"USD per period, 0 to {MAX_BUDGET_USD:g}")],
    period: Annotated[
        Literal["day", "month", "total"], typer.Option(help="day or month (UTC), or total")
    ],
) -> None:
    """Set a tenant's budget; it applies to the tenant's next call, on every worker."""
    try:
        budget = TenantBudget(usd=usd_, period=period)
    except ValidationError as exc:
        reason = "; ".join(str(e["msg"]) for e in exc.errors())
        typer.echo(f"courier: --usd {usd_:g}: {reason}", err=True)
        raise typer.Exit(2) from None
    problem = tenant_problem(tenant)
    if problem:
        typer.echo(f"courier: --tenant: {problem}", err=True)
        raise typer.Exit(2)
    _ledger().set_budget(tenant, budget)
    typer.echo(f"tenant {tenant!r}: ${budget.usd:g} per {budget.period}")


@budgets_cli.command("remove")
def budgets_remove(tenant: Annotated[str, typer.Option(help="The tenant")]) -> None:
    """Remove a tenant's budget (one from COURIER_BUDGETS comes back when an API or worker
    starts with it)."""
    if not _ledger().remove_budget(tenant):
        typer.echo(f"courier: tenant {tenant!r} has no budget", err=True)
        raise typer.Exit(1)
    typer.echo(f"tenant {tenant!r}: no budget")


@budgets_cli.command("show")
def budgets_show(
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list")] = False,
) -> None:
    """Every budget with what its period has spent and what calls in flight hold."""
    ledger = _ledger()
    now = time.time()
    rows = []
    for tenant, budget in sorted(ledger.budgets().items()):
        spent, held = ledger.spent_nano(tenant, budget.period, now)
        rows.append(
            {
                "tenant": tenant,
                "period": budget.period,
                "budget_usd": budget.usd,
                "spent_usd": usd(spent),
                "remaining_usd": max(0.0, round(budget.usd - usd(spent), 9)),
                "reserved_usd": usd(held),
                "source": budget.source,
                "set_at": budget.set_at,
            }
        )
    if as_json:
        typer.echo(json.dumps(rows))
        return
    typer.echo(
        f"{'TENANT':<24}{'PERIOD':<8}{'BUDGET':>12}{'SPENT':>14}{'REMAINING':>14}"
        f"{'RESERVED':>12}  SOURCE"
    )
    for row in rows:
        typer.echo(
            f"{row['tenant']:<24}{row['period']:<8}{row['budget_usd']:>12.2f}"
            f"{row['spent_usd']:>14.6f}{row['remaining_usd']:>14.6f}"
            f"{row['reserved_usd']:>12.6f}  {row['source']}"
        )
