"""``courier clients``: OAuth2 clients (docs/contract.md, Access control)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated

import typer
from pydantic import ValidationError

from config.settings import Settings
from producers.api.access.clients import OAuthClients

if TYPE_CHECKING:
    import redis

clients_cli = typer.Typer(
    help="OAuth2 clients (client credentials; secrets stored as salted scrypt hashes).",
    no_args_is_help=True,
)


def configured_redis() -> redis.Redis:
    """The configured Redis (the production checks do not apply: the keys and clients
    commands are how an operator fixes a missing key)."""
    from core.connections import store_client

    try:
        settings = Settings(profile="development")
    except ValidationError as exc:
        typer.echo(f"courier: invalid configuration:\n{exc}", err=True)
        raise typer.Exit(2) from None
    return store_client(settings, max_connections=2)  # through Sentinel where configured


@clients_cli.command("create")
def clients_create(
    tenant: Annotated[str, typer.Option(help="The tenant the client acts for")],
    role: Annotated[str, typer.Option(help="user, admin or auditor")] = "user",
    name: Annotated[str, typer.Option(help="What the client is for")] = "",
    as_json: Annotated[bool, typer.Option("--json", help="Print the client as JSON")] = False,
) -> None:
    """Create a client and print its id and secret: the secret is shown this once."""
    try:
        info, secret = OAuthClients(configured_redis()).create(tenant, role, name)
    except ValueError as exc:
        typer.echo(f"courier: {exc}", err=True)
        raise typer.Exit(2) from None
    if as_json:
        typer.echo(json.dumps({**info.to_json(), "secret": secret}))
        return
    typer.echo(f"client_id:     {info.id}")
    typer.echo(f"client_secret: {secret}")
    typer.echo(
        f"created {role} client {info.id} for tenant {tenant!r}; the secret is not shown again",
        err=True,
    )


@clients_cli.command("list")
def clients_list(
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's clients")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list")] = False,
) -> None:
    """List clients: id, tenant, role, created, revoked (never the secret)."""
    rows = [info.to_json() for info in OAuthClients(configured_redis()).list(tenant)]
    if as_json:
        typer.echo(json.dumps(rows))
        return
    typer.echo(f"{'ID':<26}{'TENANT':<20}{'ROLE':<9}{'CREATED':<22}{'REVOKED':<22}NAME")
    for row in rows:
        revoked = row["revoked"] or "-"
        typer.echo(
            f"{row['id']:<26}{row['tenant']:<20}{row['role']:<9}{row['created']:<22}"
            f"{revoked:<22}{row['name']}"
        )


@clients_cli.command("revoke")
def clients_revoke(
    client_id: Annotated[str, typer.Argument(help="The client's id (courier clients list)")],
) -> None:
    """Revoke a client: no new tokens, and its tokens fail within
    COURIER_TOKEN_REVOCATION_CHECK_S (default 5 s)."""
    info = OAuthClients(configured_redis()).revoke(client_id)
    if info is None:
        typer.echo(f"courier: no client {client_id!r}", err=True)
        raise typer.Exit(1)
    typer.echo(f"revoked client {info.id} of tenant {info.tenant!r}")
