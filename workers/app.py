"""The Celery app: ``celery -A workers.app worker`` and ``celery -A workers.app flower``.

Producers use it only to send tasks by name; the task modules (``tasks.*``) are
imported by the worker through ``include``.
"""

from __future__ import annotations

from celery import Celery

from config.celery import celery_config
from config.settings import get_settings
from workers import broker

app = Celery("courier")
app.config_from_object(celery_config(get_settings()))

broker.install()
