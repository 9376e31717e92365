"""Fair share between tenants within a priority (README, *Fair share*; the Lua and its rules:
:mod:`core.fair_scripts`).

:class:`FairTake` is the intake's one round trip: sort newly arrived messages into tenant
lists, start the next job in weighted fair order, claim it. The rest reads what the sorted
messages look like to everything else that looks at a queue: how many wait per priority
(:func:`held`), and where a queued job stands in the fair order (:func:`fair_ahead`).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import redis

from config.settings import ModelLimit
from core import keys
from core import metrics as wm
from core.claims import Claim, Taken, claim_from
from core.fair_scripts import FAIR_SETTLE, FAIR_TAKE
from core.pipelined import ScriptCall
from core.ratelimit.estimate import DEFAULT_MAX_TOKENS
from core.records import now_ms

# Messages sorted per priority per take: a backlog of 10,000 is sorted within 40 takes, so
# a job submitted behind it is seen within a fraction of a second (Redis time ~5 µs each).
SORT_BATCH = 256
_LUA_MAGIC = re.compile(r"([\^$()%.\[\]*+\-?])")


def glob_to_lua(pattern: str) -> str:
    """A ``COURIER_LIMITS`` glob as an anchored Lua pattern (``*``, ``?``, ``[...]``, as
    :func:`fnmatch.fnmatchcase` reads them); a pattern without ``:`` also matches the model
    name after ``provider:``, as the rate limiter matches it."""
    out, i = [], 0
    while i < len(pattern):
        char = pattern[i]
        closing = pattern.find("]", i + 2) if char == "[" else -1
        if char == "*":
            out.append(".*")
        elif char == "?":
            out.append(".")
        elif closing > 0:
            body = pattern[i + 1 : closing]
            negate = body.startswith("!")
            body = _LUA_MAGIC.sub(r"%\1", body[1:] if negate else body).replace("%-", "-")
            out.append("[" + ("^" if negate else "") + body + "]")
            i = closing
        else:
            out.append(_LUA_MAGIC.sub(r"%\1", char))
        i += 1
    body = "".join(out)
    return f"^{body}$" if ":" in pattern else f"^{body}$\n^[^:]*:{body}$"


def tpm_patterns(limits: Mapping[str, ModelLimit]) -> str:
    """The models whose jobs cost tokens in the fair order: those with a tokens-per-minute
    limit, as Lua patterns one a line."""
    return "\n".join(glob_to_lua(p) for p, limit in sorted(limits.items()) if limit.tpm)


class FairTake:
    """The intake's take: one Lua script (:data:`core.fair_scripts.FAIR_TAKE`)."""

    def __init__(
        self,
        client: redis.Redis,
        weights: Mapping[str, float] | None = None,
        limits: Mapping[str, ModelLimit] | None = None,
    ) -> None:
        self._script = client.register_script(FAIR_TAKE)
        self._weights = json.dumps(dict(weights)) if weights else ""
        self._limited = tpm_patterns(limits or {})

    def take(
        self,
        queues: Sequence[str],
        token: str,
        lease_ttl_s: float,
        message: str = "",
        popped_from: str = "",
    ) -> Taken | None:
        """Start the next job of ``queues`` (``jobs.<priority>``, highest first) in fair
        order and claim it; ``message`` was already taken off the broker list
        ``popped_from``. None when nothing waits."""
        now = now_ms()
        out: list[str] = self._script(
            keys=[
                keys.RUNNING,
                keys.SCHEDULED,
                *keys.QUEUED_ALL,
                keys.SET_ASIDE,
                keys.metrics(wm.FAIR_STARTED),
                keys.metrics(wm.FAIR_COST),
                *keys.broker_lists_by_queue(queues),
            ],
            args=[
                token,
                now,
                now + int(lease_ttl_s * 1000),
                keys.starts(now // 1000),
                keys.JOB_PREFIX,
                message,
                priority_of(popped_from) if message else "",
                keys.FAIR_PREFIX,
                SORT_BATCH,
                self._weights,
                self._limited,
                DEFAULT_MAX_TOKENS,
                *(priority_of(queue) for queue in queues),
            ],
        )
        if not out:
            return None
        task_id, argsrepr, job_id, *claimed = out
        return Taken(task_id, argsrepr, job_id, claim_from(claimed) if job_id else Claim(""))


class FairSettle:
    """The true-up of a start charged in estimated tokens, once the job has answered
    (:data:`core.fair_scripts.FAIR_SETTLE`): a call to run with the job's ending."""

    def __init__(self, client: redis.Redis, weights: Mapping[str, float]) -> None:
        self._script = client.register_script(FAIR_SETTLE)
        self._weights = weights

    def calls(
        self, job_id: str, record: Mapping[str, str], used_tokens: int, output_tokens: int
    ) -> list[ScriptCall]:
        """[] unless the job's start was charged in tokens (``fair_charge`` on its record)."""
        charge = record.get("fair_charge")
        if not charge:
            return []
        priority = charge.partition(" ")[0]
        weight = self._weights.get(record.get("tenant", ""), 1.0)
        return [
            ScriptCall(
                self._script,
                [
                    keys.job(job_id),
                    keys.fair_state(priority),
                    keys.fair_tenants(priority),
                    keys.FAIR_OUTPUT,
                ],
                [used_tokens, weight, output_tokens],
            )
        ]


def priority_of(name: str) -> str:
    """``jobs.normal`` or one of its broker lists → ``normal``."""
    return name.partition(keys.PRIORITY_SEP)[0].removeprefix("jobs.")


def held(client: redis.Redis, priorities: Sequence[str]) -> dict[str, int]:
    """Messages sorted into tenant lists and not yet taken, per priority."""
    pipe = client.pipeline(transaction=False)
    for priority in priorities:
        pipe.hget(keys.fair_state(priority), "held")
    return {p: max(0, int(n or 0)) for p, n in zip(priorities, pipe.execute(), strict=True)}


def fair_ahead(
    client: redis.Redis, priority: str, tenant: str, job_id: str, weights: Mapping[str, float]
) -> int | None:
    """Jobs of ``priority`` that start before ``job_id`` in the fair order (each start
    counted as one job: under token costs this is an estimate), or None when its message
    is not sorted yet (the caller falls back to arrival order)."""
    pipe = client.pipeline(transaction=False)
    pipe.zrank(keys.fair_queued(priority, tenant), job_id)
    pipe.zrange(keys.fair_tenants(priority), 0, -1, withscores=True)
    own_rank, active = pipe.execute()
    if own_rank is None:
        return None
    scores = dict(active)
    pipe = client.pipeline(transaction=False)
    for command in fair_reads(priority, scores):
        pipe.execute_command(*command)
    return fair_ahead_of(int(own_rank), scores, pipe.execute(), tenant, weights)


def fair_reads(priority: str, scores: Mapping[str, float]) -> list[tuple[str, ...]]:
    """The reads :func:`fair_ahead_of` takes (``found``), for the tenants of ``scores``."""
    started = keys.metrics(wm.FAIR_STARTED)
    costs = keys.metrics(wm.FAIR_COST)
    commands: list[tuple[str, ...]] = []
    for other in scores:
        label = wm.field(other, priority)
        commands += [
            ("LLEN", keys.fair_messages(priority, other)),
            ("HGET", started, label),
            ("HGET", costs, label),
        ]
    return commands


def fair_ahead_of(
    own_rank: int,
    scores: Mapping[str, float],
    found: Sequence[Any],
    tenant: str,
    weights: Mapping[str, float],
) -> int:
    """:func:`fair_ahead` from what it read: the job's rank among its tenant's sorted jobs,
    the tenants' virtual times, and :func:`fair_reads`' answers."""

    def per_job(index: int) -> float:  # a tenant's mean cost per start so far (1: none yet)
        jobs, cost = found[3 * index + 1], found[3 * index + 2]
        return float(cost) / float(jobs) if jobs and cost and float(jobs) > 0 else 1.0

    names = list(scores)
    own = names.index(tenant) if tenant in names else None
    own_weight = weights.get(tenant, 1.0)
    own_cost = per_job(own) if own is not None else 1.0
    start = scores.get(tenant, min(scores.values(), default=0.0))
    start += own_rank * own_cost / own_weight
    ahead = int(own_rank)
    for index, other in enumerate(names):
        if other != tenant:
            jobs = (start - scores[other]) * weights.get(other, 1.0) / per_job(index)
            # its starts with a lower virtual time; on a tie Redis' ZSET order (by name) wins
            before = math.floor(jobs + 1e-9) + 1 if other < tenant else math.ceil(jobs - 1e-9)
            ahead += min(int(found[3 * index]), max(0, before))
    return ahead


def fair_state(
    client: redis.Redis, priorities: Sequence[str], weights: Mapping[str, float]
) -> list[dict[str, object]]:
    """Per priority, each tenant with jobs sorted and waiting, next first: its weight, jobs
    waiting, virtual time ahead of the priority's clock, jobs started so far (``courier
    fair``)."""
    rows: list[dict[str, object]] = []
    for priority in priorities:
        pipe = client.pipeline(transaction=False)
        pipe.hget(keys.fair_state(priority), "clock")
        pipe.zrange(keys.fair_tenants(priority), 0, 99, withscores=True)
        clock, active = pipe.execute()
        pipe = client.pipeline(transaction=False)
        for tenant, _ in active:
            pipe.llen(keys.fair_messages(priority, tenant))
            pipe.hget(keys.metrics(wm.FAIR_STARTED), wm.field(tenant, priority))
        found = pipe.execute()
        for index, (tenant, vt) in enumerate(active):
            rows.append({
                "priority": priority,
                "tenant": tenant,
                "weight": weights.get(tenant, 1.0),
                "waiting": int(found[2 * index]),
                "lag": round(float(vt) - float(clock or 0), 6),
                "started": int(found[2 * index + 1] or 0),
            })  # fmt: skip
    return rows
