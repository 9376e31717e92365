"""Courier's HTTP API (docs/contract.md, HTTP API): ``producers.api:app``."""

from __future__ import annotations

from producers.api.main import create_app

app = create_app()

__all__ = ["app", "create_app"]
