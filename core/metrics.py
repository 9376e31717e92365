"""Cluster-wide job metrics, kept in Redis and rendered by the API at ``GET /metrics``.

Why Redis and not a ``/metrics`` port per worker: workers scale out (``docker compose up
--scale worker=N``, several hosts, no fixed ports), come and go, and run under gevent; a
counter kept in the shared Redis needs no service discovery, survives worker restarts, and
any API process renders the same cluster-wide totals, so Prometheus scrapes one target.

Cost on the hot path: a worker only bumps a dict in memory (a few microseconds per job);
a background loop flushes the deltas every :data:`FLUSH_INTERVAL_S` with one pipelined
``HINCRBY``/``HINCRBYFLOAT`` per changed series. A ``kill -9`` loses at most that last
interval. Rare writers (the API's submissions and cancels, the sweeper's expiries) write
through at once with :func:`count_now` / :func:`count_finished`.

Each family is one hash ``courier:metrics:<family>``: field = label values joined by ``|``,
value = the count (or, for ``provider_latency``, per-bucket counts and a ``sum`` field).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import redis

from core import keys

SEP = "|"
FLUSH_INTERVAL_S = 1.0

# Families: name → label names (the order of the values in a field).
SUBMITTED = "submitted"
FINISHED = "finished"
REQUEUED = "requeued"
PROVIDER_ERRORS = "provider_errors"
TOKENS = "tokens"
LATENCY = "provider_latency"
BREAKER_TRANSITIONS = "breaker_transitions"  # written by the breaker's Lua scripts
COST = "cost"  # nano-dollars, written by the ledger's settle script (core.cost.scripts)
CACHE = "cache"  # answer cache lookups at submission (core.cache)
CONVERSATION_TURNS = "conversation_turns"  # child jobs at submission, by how they start
FAIR_STARTED = "fair_started"  # jobs started per tenant and priority (core.fair_scripts)
FAIR_COST = "fair_cost"  # their cost in the fair order: tokens where a tpm limit applies, else 1
LABELS: dict[str, tuple[str, ...]] = {
    SUBMITTED: ("model", "priority", "kind"),
    FINISHED: ("status", "model", "priority"),
    REQUEUED: ("reason",),
    PROVIDER_ERRORS: ("model", "type"),
    TOKENS: ("model", "direction"),
    LATENCY: ("model", "le"),
    BREAKER_TRANSITIONS: ("model", "state"),
    COST: ("tenant", "model"),
    CACHE: ("model", "outcome"),
    CONVERSATION_TURNS: ("start",),
    FAIR_STARTED: ("tenant", "priority"),
    FAIR_COST: ("tenant", "priority"),
}
# Seconds; provider calls take from a fraction of a second to minutes.
LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)
LATENCY_SUM = "sum"  # the "le" of the field that holds a model's sum of seconds
INF = "+Inf"


def field(*values: object) -> str:
    """One series' field: its label values joined by ``|`` (a ``|`` inside becomes ``/``)."""
    return SEP.join(str(v if v is not None else "").replace(SEP, "/") for v in values)


def bucket_for(seconds: float) -> str:
    """The (non-cumulative) latency bucket a call falls in, by its upper bound."""
    for bound in LATENCY_BUCKETS:
        if seconds <= bound:
            return repr(bound)
    return INF


# ---- write-through, for rare events ------------------------------------------------------


def count_now(client: redis.Redis, family: str, *labels: object, amount: int = 1) -> None:
    client.hincrby(keys.metrics(family), field(*labels), amount)


def count_finished(client: redis.Redis, job_id: str, status: str) -> None:
    """Count a job that ended outside a worker's run (a cancel, an expiry while queued)."""
    model, priority = client.hmget(keys.job(job_id), ["model", "priority"])  # type: ignore[misc]
    count_now(client, FINISHED, status, text(model) or "unknown", text(priority) or "unknown")


# ---- reading, for /metrics ----------------------------------------------------------------


def text(value: Any) -> str:
    """A Redis reply (bytes or str, or None) as text."""
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else str(value)


def parse(raw: Mapping[Any, Any], family: str) -> dict[tuple[str, ...], float]:
    """A family's hash → {label values: value}; fields of the wrong shape are skipped."""
    width = len(LABELS[family])
    out: dict[tuple[str, ...], float] = {}
    for name, value in raw.items():
        labels = tuple(text(name).split(SEP))
        if len(labels) != width:
            continue
        try:
            out[labels] = float(text(value))
        except ValueError:
            continue
    return out


def read_families(
    client: redis.Redis, families: Iterable[str] = tuple(LABELS)
) -> dict[str, dict[tuple[str, ...], float]]:
    """Every family's series, read in one round trip."""
    names = list(families)
    pipe = client.pipeline(transaction=False)
    for family in names:
        pipe.hgetall(keys.metrics(family))
    return {
        family: parse(raw or {}, family) for family, raw in zip(names, pipe.execute(), strict=True)
    }


def latency_histograms(
    series: Mapping[tuple[str, ...], float],
) -> dict[str, tuple[list[tuple[str, float]], float]]:
    """``provider_latency`` series → per model: cumulative buckets (le, count) and the sum."""
    per_model: dict[str, dict[str, float]] = {}
    for (model, le), value in series.items():
        per_model.setdefault(model, {})[le] = value
    out: dict[str, tuple[list[tuple[str, float]], float]] = {}
    for model, values in per_model.items():
        total, buckets = 0.0, []
        for bound in (*(repr(b) for b in LATENCY_BUCKETS), INF):
            total += values.get(bound, 0.0)
            buckets.append((bound, total))
        out[model] = (buckets, values.get(LATENCY_SUM, 0.0))
    return out
