"""Every Redis key Courier writes, in one place.

Celery's own broker keys (queue lists ``jobs.high`` … and ``unacked*``) belong to
kombu; everything else Courier stores starts with ``courier:``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from config.celery import PRIORITIES

PREFIX = "courier:"

# Jobs
JOB = PREFIX + "job:{job_id}"  # hash: the job record, the source of truth
TENANT_JOBS = PREFIX + "tenant:{tenant}:jobs"  # zset: job id → created (ms), for listing
IDEMPOTENCY = PREFIX + "idem:{tenant}:{digest}"  # string: job id for an Idempotency-Key
RUNNING = PREFIX + "running"  # zset: job id → lease deadline (ms) while a worker runs it
SCHEDULED = PREFIX + "scheduled"  # zset: job id → when to enqueue again (ms): retry, wait
EXPIRIES = PREFIX + "expiries"  # zset: job id → expires_at (ms), for jobs with expires_in_s
JOB_PREFIX = JOB.removesuffix("{job_id}")
JOB_CHILDREN = PREFIX + "children:{job_id}"  # set: child jobs waiting for this job to end
JOB_CHILDREN_PREFIX = JOB_CHILDREN.removesuffix("{job_id}")
JOB_EVENTS = PREFIX + "events:job-ended"  # pub/sub channel: job id when a job ends
SWEEPER_LOCK = PREFIX + "lock:sweeper"  # string: which worker process sweeps now
QUEUED = PREFIX + "queued:{priority}"  # zset: job id → when it entered that queue (ms)
STARTS = PREFIX + "stats:starts:{second}"  # counter: jobs started in that second, for ETAs
SET_ASIDE = PREFIX + "messages:set-aside"  # list: job-queue messages naming no job (newest 1,000)

# Fair share (core.fair_scripts, README "Fair share"): the intake sorts each priority's queue
# messages into one list per tenant and starts the tenant with the lowest virtual time.
FAIR_PREFIX = PREFIX + "fair:"
FAIR_OUTPUT = FAIR_PREFIX + "output"  # hash: tenant|model → average output tokens
FAIR = FAIR_PREFIX + "{priority}:"  # the prefix of a priority's fair keys, below
FAIR_TENANTS = FAIR + "tenants"  # zset: tenant with messages sorted → its virtual time
FAIR_STATE = FAIR + "state"  # hash: "clock" (virtual time of the latest start), "held"
# (messages in tenant lists), "vt:<tenant>" (a tenant's virtual time after its latest start)
FAIR_MESSAGES = FAIR + "messages:{tenant}"  # list: the tenant's messages, oldest at the right
FAIR_QUEUED = FAIR + "queued:{tenant}"  # zset: job id of each sorted message → queued (ms)

# Live job events (core.events, docs/contract.md, Live events): written by the Lua scripts
JOB_EVENT_LOG = PREFIX + "job-events:{job_id}"  # stream: the job's events, entry ids 1-0, 2-0, …
JOB_LIVE = PREFIX + "live:{job_id}"  # pub/sub channel: each event of the job as it is added
JOB_EVENT_LOG_PREFIX = JOB_EVENT_LOG.removesuffix("{job_id}")
JOB_LIVE_PREFIX = JOB_LIVE.removesuffix("{job_id}")

# Webhooks
WEBHOOK_SECRET = PREFIX + "webhook:secret"  # string: generated signing secret
CALLBACKS_SCHEDULED = PREFIX + "callbacks:scheduled"  # zset: job id → next attempt (ms)
CALLBACK_LOCK = PREFIX + "callback:lock:{job_id}"  # string: the delivery now sending a job's event
CALLBACK_STATS = PREFIX + "stats:callbacks"  # hash: attempts, delivered, failed (dead letters)

# Reliability and rate limits
BREAKER = PREFIX + "breaker:{model}"  # hash: circuit state and recent calls per provider:model
BREAKERS = PREFIX + "breakers"  # hash: provider:model → open | half_open, for /metrics
LIMIT = PREFIX + "limit:{name}:{resource}"  # limiter state per limit key and resource
LIMIT_COOLDOWN = PREFIX + "limit:{name}:cooldown"  # string: set after a 429 until Retry-After
LIMIT_NAMES = PREFIX + "limits"  # set: every limit key name in use, for limiter_state

# Cost, budgets and the answer cache (core/cost/, core/cache/)
BUDGETS = PREFIX + "budgets"  # hash: tenant → its budget as JSON {usd, period, source, set_at}
BUDGET_HELD = PREFIX + "budget:{tenant}:held"  # hash: reservation id → "nano|model"; "total"
BUDGET_HELD_UNTIL = PREFIX + "budget:{tenant}:held-until"  # zset: reservation id → lapses (ms)
SPEND = PREFIX + "spend:{tenant}:{period}"  # hash: spent in a period, see spend() below
CACHE_ENTRY = PREFIX + "cache:{tenant}:{digest}"  # string: a cached answer {at, result} (JSON)
CACHE_INDEX = PREFIX + "cache:{tenant}:index"  # zset: the tenant's entries → expiry (ms)
CACHE_SIZES = PREFIX + "cache:{tenant}:sizes"  # hash: entry digest → bytes; "total": their sum

# Metrics (workers.metrics): cluster-wide counters that every API process renders at /metrics
METRICS = PREFIX + "metrics:{family}"  # hash: label values joined by "|" → count (or sum)

# Security
API_KEY = PREFIX + "apikey:{digest}"  # hash: managed API key by sha256 hex of the key
API_KEYS = PREFIX + "apikeys"  # hash: managed key id → sha256 hex digest (for list, revoke)
TENANT_QUOTA = PREFIX + "quota:{tenant}:{resource}"  # per-tenant quota state, see below
# resource "unfinished": zset of the tenant's queued/running job ids → created (ms)
# resource "rate": hash (level, ts) of the tenant's submission token bucket

# Access (producers.api.access): OAuth2 clients, token signing, failed token requests, audit
OAUTH_CLIENT = PREFIX + "oauth:client:{client_id}"  # hash: tenant, role, secret hash, revoked
OAUTH_CLIENTS = PREFIX + "oauth:clients"  # zset: client id → created (ms), for listing
JWT_DEV_KEY = PREFIX + "jwt:dev-key"  # string: "kid:secret" generated when none is configured
TOKEN_FAILURES = PREFIX + "oauth:failures:{kind}:{who}"  # counter: failed token requests in
# the current window (kind "client": per client id; "address": per source address)
AUDIT = PREFIX + "audit:{tenant}"  # stream: the tenant's audit entries (ids are ms times)


def job(job_id: str) -> str:
    return JOB.format(job_id=job_id)


def job_children(job_id: str) -> str:
    return JOB_CHILDREN.format(job_id=job_id)


def job_events(job_id: str) -> str:
    return JOB_EVENT_LOG.format(job_id=job_id)


def job_live(job_id: str) -> str:
    return JOB_LIVE.format(job_id=job_id)


def tenant_jobs(tenant: str) -> str:
    return TENANT_JOBS.format(tenant=tenant)


def idempotency(tenant: str, key: str) -> str:
    digest = hashlib.sha256(key.encode()).hexdigest()
    return IDEMPOTENCY.format(tenant=tenant, digest=digest)


def callback_lock(job_id: str) -> str:
    return CALLBACK_LOCK.format(job_id=job_id)


def queued(priority: str) -> str:
    return QUEUED.format(priority=priority)


QUEUED_ALL = tuple(queued(p) for p in PRIORITIES)


def fair_tenants(priority: str) -> str:
    return FAIR_TENANTS.format(priority=priority)


def fair_state(priority: str) -> str:
    return FAIR_STATE.format(priority=priority)


def fair_messages(priority: str, tenant: str) -> str:
    return FAIR_MESSAGES.format(priority=priority, tenant=tenant)


def fair_queued(priority: str, tenant: str) -> str:
    return FAIR_QUEUED.format(priority=priority, tenant=tenant)


STARTS_PREFIX = STARTS.removesuffix("{second}")


def starts(second: int) -> str:
    return STARTS.format(second=second)


# kombu's Redis transport keeps one list per priority step of a queue: "<queue><sep><step>".
PRIORITY_SEP = "\x06\x16"
PRIORITY_STEPS = (0, 3, 6, 9)


def broker_lists(queues: Sequence[str]) -> list[str]:
    """The lists of these kombu queues in the order its BRPOP reads them: by priority step
    first, then by queue."""
    return [
        queue if step == 0 else f"{queue}{PRIORITY_SEP}{step}"
        for step in PRIORITY_STEPS
        for queue in queues
    ]


def broker_lists_by_queue(queues: Sequence[str]) -> list[str]:
    """The same lists grouped by queue: each queue's lists in kombu's step order."""
    return [name for queue in queues for name in broker_lists([queue])]


def breaker(model: str) -> str:
    return BREAKER.format(model=model)


def limit(name: str, resource: str) -> str:
    return LIMIT.format(name=name, resource=resource)


def limit_cooldown(name: str) -> str:
    return LIMIT_COOLDOWN.format(name=name)


def metrics(family: str) -> str:
    return METRICS.format(family=family)


def api_key(digest: str) -> str:
    return API_KEY.format(digest=digest)


def tenant_quota(tenant: str, resource: str) -> str:
    return TENANT_QUOTA.format(tenant=tenant, resource=resource)


def tenant_unfinished(tenant: str) -> str:
    """zset: the tenant's jobs that have not ended (added at create, removed at the end)."""
    return tenant_quota(tenant, "unfinished")


def tenant_rate(tenant: str) -> str:
    return tenant_quota(tenant, "rate")


def oauth_client(client_id: str) -> str:
    return OAUTH_CLIENT.format(client_id=client_id)


def token_failures(kind: str, who: str) -> str:
    return TOKEN_FAILURES.format(kind=kind, who=who)


def audit(tenant: str) -> str:
    return AUDIT.format(tenant=tenant)


def budget_held(tenant: str) -> str:
    return BUDGET_HELD.format(tenant=tenant)


def budget_held_until(tenant: str) -> str:
    return BUDGET_HELD_UNTIL.format(tenant=tenant)


def spend(tenant: str, period: str) -> str:
    """hash: what ``tenant`` spent in ``period`` (``day:2026-12-06``, ``month:2026-12``,
    ``total``): ``usd`` in nano-dollars, ``calls`` (calls and lapsed reservations recorded),
    ``since`` (ms; all time only), and per model ``<model>|usd``, ``|in``, ``|out`` (tokens)
    and ``|jobs`` (jobs that called it)."""
    return SPEND.format(tenant=tenant, period=period)


def cache_entry(tenant: str, digest: str) -> str:
    return CACHE_ENTRY.format(tenant=tenant, digest=digest)


def cache_index(tenant: str) -> str:
    return CACHE_INDEX.format(tenant=tenant)


def cache_sizes(tenant: str) -> str:
    return CACHE_SIZES.format(tenant=tenant)
