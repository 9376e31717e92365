"""The Celery app: ``celery -A workers.app worker`` and ``celery -A workers.app flower``.

Producers use it only to send tasks by name; the task modules (``tasks.*``) are
imported by the worker through ``include``.
"""

from __future__ import annotations

import logging

from celery import Celery

from config.celery import celery_config
from config.settings import get_settings
from workers import broker, green
from workers.events import BufferedTaskEvents

app = Celery("courier")
app.config_from_object(celery_config(get_settings()))

broker.install()
green.install()
app.steps["consumer"].add(BufferedTaskEvents)
# Per-request INFO lines from the HTTP clients cost CPU on the hot path and say nothing
# the job's own log line does not.
# Celery's own "received"/"succeeded" lines are replaced by Courier's job log lines.
for _name in (
    "httpx",
    "httpx2",
    "openai",
    "anthropic",
    "celery.worker.strategy",
    "celery.app.trace",
):
    logging.getLogger(_name).setLevel(logging.WARNING)
