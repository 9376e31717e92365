"""The Celery app as a producer sees it: configured, with no worker machinery.

Producers send tasks by name (:mod:`core.queues`), so the API process imports neither the
task modules nor the provider SDKs, and installs none of the worker's patches (those are in
:mod:`workers.app`, the app workers and Flower run: ``celery -A workers.app worker``).
"""

from __future__ import annotations

from celery import Celery

from config.celery import celery_config
from config.settings import get_settings

app = Celery("courier")
app.config_from_object(celery_config(get_settings()))
