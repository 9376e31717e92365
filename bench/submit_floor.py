"""The framework's own floor for ``make bench-submit``: a minimal FastAPI app on the same
uvicorn as ``courier api`` that validates a small pydantic body and does one ``HSET`` and one
``LPUSH`` with the async Redis client (a submission), or one ``HGETALL`` (a read).

``uvicorn bench.submit_floor:app`` with ``FLOOR_REDIS_URL`` naming the Redis to write to.
"""

from __future__ import annotations

import json
import os
import uuid
from typing import Any

import redis.asyncio as aioredis
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

client = aioredis.Redis.from_url(
    os.environ.get("FLOOR_REDIS_URL", "redis://127.0.0.1:6379/0"), decode_responses=True
)
app = FastAPI()


class Submission(BaseModel):
    model: str
    request: dict[str, Any]
    priority: str = "normal"


@app.post("/floor/jobs", status_code=202)
async def submit(submission: Submission) -> dict[str, Any]:
    job_id = "job_" + uuid.uuid4().hex
    record = {
        "id": job_id,
        "model": submission.model,
        "priority": submission.priority,
        "request": json.dumps(submission.request),
        "status": "queued",
    }
    await client.hset(f"floor:job:{job_id}", mapping=record)
    await client.lpush("floor:queue", job_id)
    return record


@app.get("/floor/jobs/{job_id}")
async def read(job_id: str) -> dict[str, Any]:
    record: dict[str, Any] = await client.hgetall(f"floor:job:{job_id}")  # type: ignore[misc]
    if not record:
        raise HTTPException(404)
    return record
