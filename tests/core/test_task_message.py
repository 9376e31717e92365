"""The ``courier.run_job`` message built for the SUBMIT script is the one ``send_task``
writes itself (core/task_message.py): the same list, the same envelope and task-sent event
but for the ids, which the worker's TAKE script then reads the same way."""

from __future__ import annotations

import base64
import json
import re
import time
from typing import Any

import pytest
import redis
from celery import Celery

from core.queues import enqueue_job
from core.task_message import RunJobMessages, broker_list

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _normal(payload: str, volatile: tuple[str, ...]) -> dict[str, Any]:
    """A message with its body decoded, ids replaced by their role, ``volatile`` fields of
    the body (a time, a clock) dropped."""
    message = json.loads(payload)
    body = json.loads(base64.b64decode(message["body"]))
    if isinstance(body, dict):
        body = {k: v for k, v in body.items() if k not in volatile}
    message["body"] = body
    seen: dict[str, str] = {}
    text = UUID.sub(
        lambda m: seen.setdefault(m.group(0), f"<uuid{len(seen)}>"), json.dumps(message)
    )
    normal: dict[str, Any] = json.loads(text)
    return normal


@pytest.mark.parametrize("priority", ["high", "normal", "low"])
def test_the_message_is_send_tasks(
    app: Celery, redis_client: redis.Redis, redis_url: str, priority: str
) -> None:
    job_id = f"job_01TESTMESSAGE{priority.upper()}"
    events = redis_client.pubsub()
    events.psubscribe("*celeryev/task.sent")
    assert events.get_message(timeout=1)  # the subscription
    enqueue_job(app, job_id, priority)
    db = int(redis_url.rsplit("/", 1)[1])
    ours = RunJobMessages(app, db).build(job_id, priority)

    [theirs] = redis_client.lrange(ours.list_name, 0, -1)
    assert ours.list_name == broker_list(
        f"jobs.{priority}", json.loads(theirs)["properties"]["priority"]
    )
    assert _normal(ours.envelope, ()) == _normal(theirs, ())
    # Channels are global across Redis DBs: other test processes' events arrive here too.
    sent, seen = None, set[str]()
    deadline = time.monotonic() + 5
    while sent is None and time.monotonic() < deadline:
        message = events.get_message(timeout=1)
        if message and message["type"] == "pmessage":
            seen.add(message["channel"])
            sent = message if message["channel"] == ours.event_channel else None
    assert sent is not None, (ours.event_channel, seen)
    volatile = ("timestamp", "clock", "pid", "hostname")
    assert _normal(ours.event, volatile) == _normal(sent["data"], volatile)
    events.close()
    redis_client.delete(ours.list_name)


def test_without_sent_events_no_event(app: Celery) -> None:
    app.conf.task_send_sent_event = False
    built = RunJobMessages(app, 0).build("job_01X", "normal")
    assert built.event == "" and built.event_channel == ""
