"""``courier api``: the HTTP API under uvicorn, in one process or several (docs/contract.md,
Commands)."""

from __future__ import annotations

import os
from typing import Annotated

import typer


def api(
    host: Annotated[str, typer.Option(help="Interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on")] = 8000,
    log_level: Annotated[str, typer.Option(help="uvicorn log level")] = "info",
    workers: Annotated[
        int, typer.Option(min=1, help="API processes sharing the port (about one per core)")
    ] = 1,
) -> None:
    """Serve the HTTP API (producers.api:app) with uvicorn. Logs are JSON lines, redacted
    (COURIER_LOG_FORMAT=text for plain text); the audit trail is on logger courier.audit.
    --workers N: N processes on the port, /metrics summing them (PROMETHEUS_MULTIPROC_DIR)."""
    import uvicorn

    from core.logs import configure_logging
    from producers.cli import checked_settings

    checked_settings(serves_api=True)

    configure_logging(log_level, json_lines=os.environ.get("COURIER_LOG_FORMAT") != "text")
    if workers > 1:
        from producers.api.metrics import prepare_multiprocess_dir

        prepare_multiprocess_dir()
    uvicorn.run(
        "producers.api:app",
        host=host,
        port=port,
        log_level=log_level,
        log_config=None,  # uvicorn's own loggers propagate to the JSON handler
        timeout_graceful_shutdown=5,
        workers=workers,
    )
