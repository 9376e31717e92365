"""Courier's HTTP API (docs/contract.md, HTTP API): ``producers.api:app``.

The app is built on first access, so that importing a module of this package (the CLI reads
``producers.api.apikeys``) neither reads the settings nor builds the Celery app.
"""

from __future__ import annotations

from typing import Any

__all__ = ["app", "create_app"]


def __getattr__(name: str) -> Any:
    if name == "app":
        from producers.api.main import create_app

        app = create_app()
        globals()["app"] = app
        return app
    if name == "create_app":
        from producers.api.main import create_app

        return create_app
    raise AttributeError(name)
