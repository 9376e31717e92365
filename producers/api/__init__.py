"""Courier's HTTP API (SPEC §3): ``producers.api:app``."""

from __future__ import annotations

from producers.api.main import create_app

app = create_app()

__all__ = ["app", "create_app"]
