"""A direct producer for worker-level tests: store a job and enqueue it, as the API does; the
fields of a job as the API stores them (for tests that drive the store or the runner)."""

from __future__ import annotations

import time
from typing import Any

import redis
from celery import Celery

from config.celery import celery_config
from config.settings import Settings
from core.jobs import TERMINAL
from core.queues import enqueue_job
from core.records import to_view
from core.store import JobStore


def chat(prompt: str, **request: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": prompt}], **request}


def job_fields(
    prompt: str, model: str = "openai:gpt-4o-mini", *, priority: str = "normal", **options: Any
) -> dict[str, Any]:
    """The fields of a chat job as the API stores them (``JobStore.create``)."""
    return {
        "model": model,
        "kind": "chat",
        "priority": priority,
        "request": chat(prompt, max_tokens=50),
        "fallback_models": [],
        "metadata": {},
        "max_attempts": 5,
        "timeout_s": 30,
        **options,
    }


class DirectProducer:
    def __init__(self, redis_url: str) -> None:
        self.redis = redis.Redis.from_url(redis_url, decode_responses=True)
        self.store = JobStore(self.redis, retention_s=3600)
        self.celery = Celery("courier-test-producer")
        self.celery.config_from_object(celery_config(Settings(redis_url=redis_url)))

    def submit(
        self,
        prompt: str,
        model: str = "openai:gpt-4o-mini",
        *,
        priority: str = "normal",
        enqueue: bool = True,
        tenant: str = "t1",
        **options: Any,
    ) -> str:
        job_id, _ = self.store.create(
            tenant, job_fields(prompt, model, priority=priority, **options)
        )
        if enqueue:
            enqueue_job(self.celery, job_id, priority)
        return job_id

    def job(self, job_id: str) -> dict[str, Any]:
        record = self.store.get(job_id)
        assert record is not None, job_id
        return to_view(record)

    def wait(self, job_ids: list[str], timeout: float = 60) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            jobs = [self.job(j) for j in job_ids]
            if all(j["status"] in TERMINAL for j in jobs):
                return jobs
            if time.monotonic() > deadline:
                pending = [(j["id"], j["status"]) for j in jobs if j["status"] not in TERMINAL]
                raise TimeoutError(f"{len(pending)} jobs not finished: {pending[:5]}")
            time.sleep(0.1)

    def close(self) -> None:
        self.redis.close()
