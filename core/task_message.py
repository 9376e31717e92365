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


@dataclass(frozen=True, slots=True)
class Queued:
    """One job's message: the list it goes on, the envelope, and its ``task-sent`` event
    (channel and payload; empty when events are off)."""

    list_name: str
    envelope: str
    event_channel: str
    event: str


class RunJobMessages:
    """Builds ``courier.run_job`` messages as this process's ``send_task`` would: the JSON is
    laid out once (as kombu's ``json.dumps`` lays it out) and only the ids are filled in per
    job, which costs a fraction of building and dumping the dicts each time."""

    def __init__(self, app: Celery, db: int) -> None:
        self.app = app
        self.broker_url = app.conf.broker_url or ""
        self.origin = anon_nodename()
        self.sent_events = bool(app.conf.task_send_sent_event)
        self.event_channel = f"/{db}.celeryev/task.sent"
        self._envelope = _template(_envelope(self.origin, str(app.thread_oid)))
        self._event = _template(_event_envelope(self.origin))
        self._event_body = _template(_event_body(self.origin))

    def build(self, job_id: str, priority: str) -> Queued:
        task_id, tag = _uuid4(), _uuid4()
        queue = queue_for(priority)
        pri = message_priority(priority, self.broker_url)
        body = _b64(_BODY_HEAD + job_id + _BODY_TAIL)
        envelope = self._envelope.format(
            task=task_id, job=job_id, body=body, queue=queue, priority=pri, tag=tag
        )
        if not self.sent_events:
            return Queued(broker_list(queue, pri), envelope, "", "")
        event_body = self._event_body.format(
            task=task_id, job=job_id, queue=queue, clock=self.app.clock.forward(),
            timestamp=repr(time.time()), utcoffset=repr(float(utcoffset())), pid=os.getpid(),
        )  # fmt: skip
        event = self._event.format(body=_b64(event_body), tag=_uuid4())
        return Queued(broker_list(queue, pri), envelope, self.event_channel, event)


# Placeholders that no JSON text of these messages contains otherwise.
_BODY_HEAD, _BODY_TAIL = json.dumps([["\x00"], {}, EMBED]).split("\\u0000")
_FIELDS = ("task", "job", "body", "queue", "priority", "tag", "clock", "timestamp",
           "utcoffset", "pid")  # fmt: skip


def _uuid4() -> str:
    """``str(uuid.uuid4())``, in half its time."""
    raw = bytearray(os.urandom(16))
    raw[6] = raw[6] & 0x0F | 0x40  # version 4
    raw[8] = raw[8] & 0x3F | 0x80  # RFC 4122 variant
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _hole(name: str) -> str:
    return f"\x00{name}\x00"


def _template(layout: object) -> str:
    """``json.dumps(layout)`` as a ``str.format`` template: each placeholder (quoted, or
    bare where kombu writes a number) becomes its ``{field}``."""
    text = json.dumps(layout).replace("{", "{{").replace("}", "}}")
    for name in _FIELDS:
        hole = json.dumps(_hole(name))[1:-1]
        text = text.replace(f'"#{hole}"', "{" + name + "}").replace(hole, "{" + name + "}")
    return text


def _envelope(origin: str, reply_to: str) -> dict[str, object]:
    task = _hole("task")
    headers: dict[str, object] = {
        "lang": "py", "task": RUN_JOB, "id": task, "shadow": None, "eta": None,
        "expires": None, "group": None, "group_index": None, "retries": 0,
        "timelimit": [None, None], "root_id": task, "parent_id": None,
        "argsrepr": f"['{_hole('job')}']", "kwargsrepr": "{}", "origin": origin,
        "ignore_result": None, "replaced_task_nesting": 0, "stamped_headers": None,
        "stamps": {},
    }  # fmt: skip
    return {
        "body": _hole("body"),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": headers,
        "properties": {
            "correlation_id": task,
            "reply_to": reply_to,
            "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": _hole("queue")},
            "priority": "#" + _hole("priority"),
            "body_encoding": "base64",
            "delivery_tag": _hole("tag"),
        },
    }


def _event_body(origin: str) -> dict[str, object]:
    task = _hole("task")
    return {
        "hostname": origin, "utcoffset": "#" + _hole("utcoffset"), "pid": "#" + _hole("pid"),
        "clock": "#" + _hole("clock"), "uuid": task, "root_id": task, "parent_id": None,
        "name": RUN_JOB, "args": f"['{_hole('job')}']", "kwargs": "{}", "retries": 0,
        "eta": None, "expires": None, "queue": _hole("queue"), "exchange": "",
        "routing_key": _hole("queue"), "timestamp": "#" + _hole("timestamp"),
        "type": "task-sent",
    }  # fmt: skip


def _event_envelope(origin: str) -> dict[str, object]:
    return {
        "body": _hole("body"),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {"hostname": origin},
        "properties": {
            "delivery_mode": 1,
            "delivery_info": {"exchange": "celeryev", "routing_key": "task.sent"},
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": _hole("tag"),
        },
    }
