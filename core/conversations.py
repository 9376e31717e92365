"""Conversations: a job that continues an earlier one (``parent_job_id``, docs/contract.md,
Conversations).

A job keeps only its own request and reply; its transcript is its ancestors' messages and
replies, root first, then its own. Three moments:

* submission — :func:`prepare` reads the parent's record once (its transcript size is kept in
  it, so the bound check does not depend on the depth) and gives the child's fields; after
  CREATE, :func:`attach` meets the parent in one script: ready (the parent has succeeded),
  waiting (registered on the parent, holding no worker slot), or failed ``parent_failed``;
* the parent's end — FINISH releases or fails its waiting children
  (:mod:`core.conversation_scripts`);
* the child's start — :func:`request_for` reads the whole line of ancestors in one script and
  builds what the provider receives, re-checking the parent (a stray message, a race).

Messages stay in Courier's (OpenAI) shape throughout; each adapter maps them for its provider
(system lifted, tool calls and tool results), so a conversation may change provider mid-way.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from config.settings import Settings
from core import conversation_scripts, keys
from core.errors import FinalError, InvalidRequest
from core.records import Record

INHERITED = ("system", "tools")  # request fields a child without them takes from its line
ACTIVE = ("queued", "running")


class ParentRefused(ValueError):
    """The parent a submission names cannot be continued (API: 422)."""


class ParentFailed(FinalError):
    """The parent failed, was cancelled or expired: the child never calls a provider."""

    error_type = conversation_scripts.PARENT_FAILED


class ParentPending(Exception):
    """The parent has not ended yet (the child started early: a stray message)."""


@dataclass(frozen=True, slots=True)
class Link:
    """One job of a line of ancestors as :data:`CHAIN` reads it."""

    job_id: str
    tenant: str
    status: str
    kind: str
    request: dict[str, Any]
    result: dict[str, Any] | None

    @property
    def kept(self) -> bool:
        return bool(self.tenant)


def json_bytes(value: Any) -> int:
    """The size of ``value`` as compact UTF-8 JSON: how transcripts are measured."""
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())


def reply_message(result: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A job's answer as the next request's assistant turn: its text and tool calls (an
    empty ``tool_calls`` list is left out: OpenAI refuses one)."""
    message = (result or {}).get("message")
    if not isinstance(message, Mapping):
        return None
    turn: dict[str, Any] = {"role": "assistant", "content": message.get("content")}
    if message.get("tool_calls"):
        turn["tool_calls"] = message["tool_calls"]
    return turn


def _own_size(request: Mapping[str, Any]) -> tuple[int, int]:
    messages = request.get("messages") or []
    return len(messages), json_bytes(messages) + len((request.get("system") or "").encode())


# ---- submission ------------------------------------------------------------------------


def prepare(
    client: redis.Redis, tenant: str, parent_id: str, request: Mapping[str, Any], settings: Settings
) -> dict[str, Any]:
    """The fields a new child of ``parent_id`` is stored with (queued, waiting for its
    parent); raises :class:`ParentRefused` when the parent is not the tenant's chat job or the
    transcript would pass the configured bounds. One round trip, whatever the depth."""
    names = ("tenant", "status", "kind", "conversation_id", "conv_messages", "conv_bytes",
             "conv_depth", "request", "result")  # fmt: skip
    found = dict(zip(names, client.hmget(keys.job(parent_id), names), strict=True))
    if found["tenant"] != tenant:  # another tenant's job is as unknown as a missing one
        raise ParentRefused(
            f"parent_job_id {parent_id!r} names no job of this tenant (none such, or past "
            f"its retention of {settings.job_retention_s} s)"
        )
    if found["kind"] == "embedding":
        raise ParentRefused(f"parent_job_id {parent_id!r} is an embedding job, not a chat")
    if found["conv_messages"]:
        messages, size = int(found["conv_messages"]), int(found["conv_bytes"] or 0)
    else:  # a root: its own request is its whole transcript so far
        messages, size = _own_size(json.loads(found["request"] or "{}"))
    if found["status"] == "succeeded":
        reply = reply_message(json.loads(found["result"] or "{}"))
        if reply is not None:
            messages, size = messages + 1, size + json_bytes(reply)
    elif found["status"] in ACTIVE:
        messages += 1  # its reply to come (its size is checked when this job starts)
    own_messages, own_size = _own_size(request)
    messages, size = messages + own_messages, size + own_size
    check_bounds(messages, size, settings, ParentRefused)
    return {
        "parent_job_id": parent_id,
        "conversation_id": found["conversation_id"] or parent_id,
        "conv_depth": int(found["conv_depth"] or 0) + 1,
        "conv_messages": messages,
        "conv_bytes": size,
        "waiting_for": "parent",
    }


def check_bounds(messages: int, size: int, settings: Settings, error: type[Exception]) -> None:
    if messages > settings.conversation_max_messages:
        raise error(
            f"the conversation would send {messages} messages; the limit is "
            f"{settings.conversation_max_messages} (COURIER_CONVERSATION_MAX_MESSAGES)"
        )
    if size > settings.conversation_max_bytes:
        raise error(
            f"the conversation would send {size} bytes of messages; the limit is "
            f"{settings.conversation_max_bytes} (COURIER_CONVERSATION_MAX_BYTES)"
        )


def attach(client: redis.Redis, record: Record, retention_s: int) -> str:
    """Meet a new child (just created) with its parent: ``ready`` (enqueue it now),
    ``waiting`` (its parent's end releases it), ``failed`` (parent_failed; its callback is
    scheduled) or ``gone`` (it no longer waits: cancelled meanwhile)."""
    script = client.register_script(conversation_scripts.ATTACH)
    job_id, parent_id = record["id"], record["parent_job_id"]
    return str(
        script(
            keys=[
                keys.job(job_id),
                keys.job(parent_id),
                keys.RUNNING,
                keys.SCHEDULED,
                keys.EXPIRIES,
                keys.CALLBACKS_SCHEDULED,
                *keys.QUEUED_ALL,
                keys.tenant_unfinished(record["tenant"]),
            ],
            args=[job_id, parent_id, retention_s, keys.JOB_EVENTS],
        )
    )


# ---- the line of ancestors ---------------------------------------------------------------


def chain(client: redis.Redis, job_id: str, max_jobs: int) -> list[Link]:
    """``job_id`` and its ancestors, nearest first, read in one script (a job that is gone
    ends the list, unkept)."""
    script = client.register_script(conversation_scripts.CHAIN)
    flat: list[str] = script(args=[job_id, max_jobs])
    links = []
    for i in range(0, len(flat), 6):
        link_id, tenant, status, kind, request, result = flat[i : i + 6]
        parsed_result = json.loads(result) if result else None
        parsed_request = json.loads(request or "{}")
        links.append(Link(link_id, tenant, status, kind or "chat", parsed_request, parsed_result))
    return links


def transcript(links: Sequence[Link]) -> list[dict[str, Any]]:
    """The messages of a line (nearest first), root first, each with the ``job_id`` that
    added it: a job's top-level ``system``, its request messages, its reply."""
    out: list[dict[str, Any]] = []
    for link in reversed(links):
        if link.request.get("system"):
            out.append({"role": "system", "content": link.request["system"], "job_id": link.job_id})
        for message in link.request.get("messages") or []:
            out.append({**message, "job_id": link.job_id})
        reply = reply_message(link.result) if link.status == "succeeded" else None
        if reply is not None:
            out.append({**reply, "job_id": link.job_id})
    return out


def request_for(
    client: redis.Redis, record: Record, request: dict[str, Any], settings: Settings
) -> dict[str, Any]:
    """What a child job sends: its line's whole conversation, then its own messages; the
    nearest ``system`` and ``tools`` when it has none. Raises :class:`ParentPending`,
    :class:`ParentFailed`, or :class:`InvalidRequest` (a piece gone, or past the bounds)."""
    parent_id = record["parent_job_id"]
    links = chain(client, parent_id, settings.conversation_max_messages + 1)
    parent = links[0]
    if not parent.kept or parent.tenant != record.get("tenant"):
        raise ParentFailed(f"its parent job {parent_id} is no longer kept (parent_failed)")
    if parent.status in ACTIVE:
        raise ParentPending(parent_id)
    if parent.status != "succeeded":
        raise ParentFailed(f"its parent job {parent_id} {parent.status} (parent_failed)")
    if not all(link.kept for link in links) or links[-1].request.get("messages") is None:
        raise InvalidRequest("an earlier job of the conversation is no longer kept")
    built = dict(request)
    for name in INHERITED:
        if built.get(name) is None:
            found = next((link.request[name] for link in links if link.request.get(name)), None)
            if found is not None:
                built[name] = found
    built["messages"] = [*_sent_messages(links), *request["messages"]]
    size = json_bytes(built["messages"]) + len((built.get("system") or "").encode())
    check_bounds(len(built["messages"]), size, settings, InvalidRequest)
    return built


def _sent_messages(links: Sequence[Link]) -> list[dict[str, Any]]:
    """The line's messages as sent: request messages and replies, root first (a top-level
    ``system`` is not a message: the nearest one is the request's ``system``)."""
    out: list[dict[str, Any]] = []
    for link in reversed(links):
        out.extend(link.request.get("messages") or [])
        reply = reply_message(link.result) if link.status == "succeeded" else None
        if reply is not None:
            out.append(reply)
    return out
