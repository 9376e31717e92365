"""What the store answers when a worker tries to start a job (``JobStore.claim`` / ``take``)."""

from __future__ import annotations

from dataclasses import dataclass

from core.records import Record


@dataclass(slots=True)
class Claim:
    """The outcome of trying to start a job: ``record`` is set only when it is ours to run."""

    status: str
    record: Record | None = None


@dataclass(slots=True)
class Taken:
    """A job's message taken off its queue, and the claim of its job (``claim.record`` set
    when the job is now ours to run). ``job_id`` is empty for a message that names no job:
    it was set aside (``keys.SET_ASIDE``), not run."""

    task_id: str
    argsrepr: str
    job_id: str
    claim: Claim


def claim_from(out: list[str]) -> Claim:
    """A claim script's answer: {'claimed', field, value, ...} or {status-or-reason}."""
    if out[0] != "claimed":
        return Claim(out[0])
    flat = out[1:]
    return Claim("claimed", dict(zip(flat[::2], flat[1::2], strict=True)))
