"""``parent_job_id`` at submission (docs/contract.md, Conversations): the two steps the
submit route takes for a child job, and nothing for a job without a parent.

1. :func:`child_fields` before the job is stored: the parent checked (the tenant's chat
   job, still kept) and the transcript's bounds, in one read of the parent's record;
2. :func:`ready_to_queue` once it is stored: it meets its parent (core.conversations.attach)
   and is queued now only if the parent has already succeeded; a child whose parent failed
   is failed ``parent_failed`` at once (its webhook sent).
"""

from __future__ import annotations

import logging
from typing import Any

import redis
from celery import Celery

from config.settings import Settings
from core import conversations
from core import metrics as wm
from core.jobs import JobSubmission
from core.queues import enqueue_callback
from core.store import JobStore
from producers.api.errors import ApiError

log = logging.getLogger("courier.api.conversations")


def child_fields(
    store: JobStore, tenant: str, submission: JobSubmission, settings: Settings
) -> dict[str, Any]:
    """The stored fields that make the job a child of its ``parent_job_id`` ({} without one);
    422 for a parent the tenant cannot continue or a transcript past the bounds."""
    if submission.parent_job_id is None:
        return {}
    try:
        return conversations.prepare(
            store.redis, tenant, submission.parent_job_id, submission.request, settings
        )
    except conversations.ParentRefused as exc:
        raise ApiError(422, str(exc), "invalid_request") from None


def ready_to_queue(
    store: JobStore, celery: Celery, job_id: str, tenant: str, fields: dict[str, Any]
) -> bool:
    """Whether the job just stored is to be queued now: always without a parent; with one,
    only when the parent has succeeded (else it waits, or has failed parent_failed)."""
    if not fields.get("parent_job_id"):
        return True
    record = {"id": job_id, "parent_job_id": fields["parent_job_id"], "tenant": tenant}
    start = conversations.attach(store.redis, record, store.retention_s)
    try:
        wm.count_now(store.redis, wm.CONVERSATION_TURNS, start)
    except redis.RedisError as exc:  # the job is stored: a lost count is the lesser harm
        log.warning("conversation turn not counted: %s", exc)
    if start == "failed" and fields.get("callback_url"):
        try:
            enqueue_callback(celery, job_id)
        except Exception as exc:  # scheduled due now too: the sweeper sends it
            log.warning("enqueue of the callback of %s failed: %s", job_id, exc)
    return start == "ready"
