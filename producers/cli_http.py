"""What the CLI's commands that talk to the HTTP API share: the ``--api-url`` and
``--api-key`` options, and one way to report an error answer or an unreachable API."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer

ApiUrl = Annotated[str | None, typer.Option(envvar="COURIER_API_URL", help="The API's base URL")]
ApiKey = Annotated[
    str | None, typer.Option(envvar="COURIER_API_KEY", help="An API key", show_default=False)
]


@contextmanager
def api_call() -> Iterator[None]:
    """Exit 2 on the API's error answer (printed as its JSON error) or an unreachable API."""
    import httpx

    from producers.client import CourierAPIError

    try:
        yield
    except CourierAPIError as exc:
        typer.echo(json.dumps({"error": {"type": exc.type, "message": exc.message}}), err=True)
        raise typer.Exit(2) from None
    except httpx.TransportError as exc:
        typer.echo(f"courier: cannot reach the API: {exc}", err=True)
        raise typer.Exit(2) from None
