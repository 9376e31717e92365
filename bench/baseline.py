"""The seeds' naive design, kept only as the benchmark's baseline.

A tiny Celery app of its own (Redis broker on DB 11): a prefork worker with one
child per core, a task that calls the OpenAI SDK directly with tenacity retries and
writes its outcome to a Redis hash. No job store, leases, priorities or webhooks.

``celery -A bench.baseline worker -P prefork -c 2 -Q baseline``
"""

from __future__ import annotations

import os
import time
from functools import cache

import openai
import redis
from celery import Celery
from tenacity import (
    retry,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

BROKER_URL = os.environ.get("BASELINE_REDIS_URL", "redis://127.0.0.1:6379/11")
QUEUE = "baseline"
RESULT_KEY = "baseline:job:{job_id}"
RETRYABLE = (
    openai.RateLimitError,
    openai.APIConnectionError,
    openai.APITimeoutError,
    openai.InternalServerError,
)

app = Celery("baseline", broker=BROKER_URL)
app.conf.update(
    task_default_queue=QUEUE,
    task_ignore_result=True,
    task_serializer="json",
    accept_content=["json"],
    worker_hijack_root_logger=False,
)


@cache
def client() -> openai.OpenAI:
    """One SDK client per worker child (OPENAI_BASE_URL / OPENAI_API_KEY from the env)."""
    return openai.OpenAI(timeout=60, max_retries=0)


@cache
def results() -> redis.Redis:
    return redis.Redis.from_url(BROKER_URL, decode_responses=True)


@retry(
    retry=retry_if_exception_type(RETRYABLE),
    wait=wait_random_exponential(multiplier=1, max=30),
    stop=stop_after_attempt(5),
    reraise=True,
)
def complete(prompt: str) -> str:
    response = client().chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": prompt}],
        max_tokens=50,
    )
    return response.choices[0].message.content or ""


@app.task(name="baseline.run_job")
def run_job(job_id: str, prompt: str, created_at: float) -> None:
    started = time.time()
    try:
        output, status = complete(prompt), "succeeded"
    except openai.OpenAIError as exc:
        output, status = repr(exc), "failed"
    results().hset(
        RESULT_KEY.format(job_id=job_id),
        mapping={
            "status": status,
            "output": output,
            "created_at": created_at,
            "started_at": started,
            "finished_at": time.time(),
        },
    )


def submit(job_id: str, prompt: str) -> None:
    """What the seeds' producers did: ``delay`` with the prompt in the message."""
    run_job.delay(job_id, prompt, time.time())
