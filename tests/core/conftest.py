"""Fixtures of the core tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from celery import Celery

from config.celery import celery_config
from config.settings import Settings


@pytest.fixture()
def app(redis_url: str) -> Iterator[Celery]:
    """A Celery app configured as Courier's, on this test run's Redis DB."""
    celery = Celery("courier-test-core")
    celery.config_from_object(celery_config(Settings(redis_url=redis_url)))
    yield celery
    celery.close()
