"""The message ``app.send_task("courier.run_job", args=[job_id])`` puts on a Redis broker,
built here so that one Lua call (:mod:`core.submit_script`) can store a job and queue it.

What kombu 5.7's Redis transport ``LPUSH``es is a JSON envelope around Celery's task message
(protocol 2: the headers name the task and carry ``argsrepr``, the body is the base64 of
``[args, kwargs, embed]``), on the list of the queue's priority step; with
``task_send_sent_event`` Celery also ``PUBLISH``es a ``task-sent`` event on the ``celeryev``
fanout. The worker's TAKE script (:mod:`core.scripts`) reads ``headers.task``,
``headers.id`` and ``headers.argsrepr``; Flower reads the event. Tests compare both with what
``send_task`` itself writes.
"""

from __future__ import annotations

import base64
import json
import os
import time
import uuid
from bisect import bisect
from dataclasses import dataclass

from celery import Celery
from celery.utils.nodenames import anon_nodename
from celery.utils.time import utcoffset

from config.celery import message_priority, queue_for
from core.keys import PRIORITY_SEP, PRIORITY_STEPS

RUN_JOB = "courier.run_job"
EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


def broker_list(queue: str, priority: int) -> str:
    """The list kombu's Redis transport keeps a queue's messages of this priority on."""
    step = PRIORITY_STEPS[bisect(PRIORITY_STEPS, priority) - 1]
    return f"{queue}{PRIORITY_SEP}{step}" if step else queue


def _b64json(value: object) -> str:
    return base64.b64encode(json.dumps(value).encode()).decode()


@dataclass(frozen=True, slots=True)
class Queued:
    """One job's message: the list it goes on, the envelope, and its ``task-sent`` event
    (channel and payload; empty when events are off)."""

    list_name: str
    envelope: str
    event_channel: str
    event: str


class RunJobMessages:
    """Builds ``courier.run_job`` messages as this process's ``send_task`` would."""

    def __init__(self, app: Celery, db: int) -> None:
        self.app = app
        self.broker_url = app.conf.broker_url or ""
        self.origin = anon_nodename()
        self.reply_to = app.thread_oid
        self.sent_events = bool(app.conf.task_send_sent_event)
        self.event_channel = f"/{db}.celeryev/task.sent"

    def build(self, job_id: str, priority: str) -> Queued:
        task_id = str(uuid.uuid4())
        queue = queue_for(priority)
        pri = message_priority(priority, self.broker_url)
        argsrepr = repr([job_id])
        headers = {
            "lang": "py", "task": RUN_JOB, "id": task_id, "shadow": None, "eta": None,
            "expires": None, "group": None, "group_index": None, "retries": 0,
            "timelimit": [None, None], "root_id": task_id, "parent_id": None,
            "argsrepr": argsrepr, "kwargsrepr": "{}", "origin": self.origin,
            "ignore_result": None, "replaced_task_nesting": 0, "stamped_headers": None,
            "stamps": {},
        }  # fmt: skip
        envelope = {
            "body": _b64json([[job_id], {}, EMBED]),
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": headers,
            "properties": {
                "correlation_id": task_id,
                "reply_to": self.reply_to,
                "delivery_mode": 2,
                "delivery_info": {"exchange": "", "routing_key": queue},
                "priority": pri,
                "body_encoding": "base64",
                "delivery_tag": str(uuid.uuid4()),
            },
        }
        event = self._sent_event(task_id, argsrepr, queue) if self.sent_events else ""
        return Queued(
            broker_list(queue, pri),
            json.dumps(envelope),
            self.event_channel if event else "",
            event,
        )

    def _sent_event(self, task_id: str, argsrepr: str, queue: str) -> str:
        body = {
            "hostname": self.origin, "utcoffset": float(utcoffset()), "pid": os.getpid(),
            "clock": self.app.clock.forward(), "uuid": task_id, "root_id": task_id,
            "parent_id": None, "name": RUN_JOB, "args": argsrepr, "kwargs": "{}",
            "retries": 0, "eta": None, "expires": None, "queue": queue, "exchange": "",
            "routing_key": queue, "timestamp": time.time(), "type": "task-sent",
        }  # fmt: skip
        return json.dumps(
            {
                "body": _b64json(body),
                "content-encoding": "utf-8",
                "content-type": "application/json",
                "headers": {"hostname": self.origin},
                "properties": {
                    "delivery_mode": 1,
                    "delivery_info": {"exchange": "celeryev", "routing_key": "task.sent"},
                    "priority": 0,
                    "body_encoding": "base64",
                    "delivery_tag": str(uuid.uuid4()),
                },
            }
        )
