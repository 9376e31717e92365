"""The Celery app: ``celery -A workers.app worker`` and ``celery -A workers.app flower``.

The one Celery app (:mod:`core.celery_app`) with what only a worker process needs: kombu's
Redis transport fixes, gevent's socket-poll fix, batched task events and Courier's job intake.
The task modules (``tasks.*``) are imported by the worker through ``include``.
"""

from __future__ import annotations

import logging

from core.celery_app import app
from workers import broker, green, outage
from workers.events import BufferedTaskEvents
from workers.run.flower import FlowerEvents
from workers.run.intake import JobIntake

broker.install()
green.install()
outage.install()
app.steps["consumer"].add(BufferedTaskEvents)
app.steps["consumer"].add(JobIntake)
app.steps["consumer"].add(FlowerEvents)
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
