"""Cluster-wide rate limits: one budget per limit key, shared by every worker on every host.

**Limit key.** ``COURIER_LIMITS`` maps glob patterns (``openai:*``, ``openai:gpt-4o*``,
``anthropic:claude-haiku-4-5``) to ``{"rpm", "tpm", "max_in_flight"}``. A job's
``provider:model`` takes the most specific matching pattern (an exact name, else the pattern
with the most literal characters); the key is that pattern plus ``sha256(api key)[:12]`` of
the provider key in use (``OPENAI_API_KEY``, ``ANTHROPIC_API_KEY``, or the variable a named
provider's ``api_key_env`` names: :mod:`core.credentials`), so two accounts have two budgets,
even under one pattern (``*`` limits each provider key on its own). A model no pattern matches
is not limited: reserve grants without touching Redis.

**Algorithm.** A token bucket per resource (:mod:`.bucket`): capacity = the limit per minute,
refilled continuously at 99 % of limit/60 per second (a 1 % margin, so that a provider
counting its own window keeps a little room at our steady state), so an idle key allows the
minute's burst and a busy one its rate. A sliding-window counter (:mod:`.window`) is the
alternative. Each decision is one Lua script in Redis (:mod:`.backends.redis`);
:mod:`.backends.memory` is its twin.

**Reserve, then settle.** Reserve takes 1 request + the estimated tokens (:mod:`.estimate`:
prompt by chars/4 + 4 per message + 2, plus ``max_tokens``, default 4,096) + 1 in-flight slot,
all or nothing. Settle: after an answer, the tokens are charged or refunded to the true
``usage`` and the request stays spent; a call that never happened, or never reached the
provider (connection error), gives everything back; a 429 or a 4xx refunds the tokens; a 5xx
refunds the ``max_tokens`` part (the prompt was read); a timeout keeps everything. The
in-flight slot is freed in every case, and by expiry (``COURIER_PROVIDER_TIMEOUT_S`` + 60 s)
if its worker died.

**Waiting.** A refused job is handed back by the runner for ``wait_s``: no spinning, nothing
held. ``wait_s`` is the time until the budget has refilled enough for every waiter ahead of it
plus itself (its place in line; each waiter ahead counted at its net cost: 1 request, and its
prompt + the average output seen so far, not its whole ``max_tokens``), so a backlog of
thousands comes back one by one at the rate, not all at once. Calls in flight reserved their
whole ``max_tokens`` and give most of it back when they answer: when those refunds (each call
assumed like the refused one) would cover the waiters ahead and this one at their whole
reservations, ``wait_s`` is only the calls' average latency, so a burst of claims is not
paced slower than a trickle. Before any answer has set the average output (whatever the
reason of the refusal), each waiter ahead counts its prompt alone and the calls in flight
give back their whole ``max_tokens``: ``wait_s`` is the earliest the job could go, and it
asks again then, knowing more. (A line counted at every whole ``max_tokens`` paced a fresh
key's first minute at a third of its rate in the two-worker test; capping every wait at a
call's latency would poll for as long as the first calls run.) Waiters register, by job id,
in one zset per priority (id → when due).

**Priority rule.** High before normal before low:

1. while a ``high`` waiter is due (its time has come and it has not been served yet, for up to
   5 s), ``normal`` and ``low`` are refused; while a ``normal`` one is due, ``low`` is refused;
2. within a priority, a job arriving while others of its priority are due waits behind them;
3. while any work is waiting, ``normal`` and ``low`` may not take a bucket below 10 % of its
   capacity: that share is kept for ``high``, which may use the whole bucket.
   With no one waiting, every priority may use the whole bucket.

**Fair order** (README, *Fair share*). Within a priority, tenants are served in weighted fair
order (start-time fair queuing): each tenant has a virtual time per limit key and priority,
advanced at each grant by the call's net units (its prompt + the average output where a tpm
limit applies, else 1 request) ÷ its weight (``COURIER_TENANT_WEIGHTS``). While another
tenant with a lower virtual time is waiting, a tenant is refused (``fair``) and told to come
back when that tenant's whole calls have caught up with it, plus its own waiters ahead at its
share of the rate; the tenant first in that order skips the arrival order (``queue``) and is
told to come back as soon as its own call fits. A tenant that was not waiting starts at the
lowest waiting tenant's virtual time (idle time is not banked). A tenant counts as waiting
until its latest refusal's wait plus ``grace_s`` has passed. With one tenant in the line
nothing changes.

**Provider feedback** (:mod:`.feedback`): each answer's remaining-* headers give the
provider's room now (what it said, less our calls sent since, plus its refill during the
call): the budget normal work may use is lowered to it (never raised); calls in flight are
capped at the plain ``remaining`` (at least 1), so calls the bucket believes in but the
provider has not confirmed never go out in a batch. A lower limit-* is learned (never above
the configured limit). A 429 sets a shared cool-down until ``Retry-After``: every worker's
reserve refuses until then; the buckets restart from the ``high`` share and one call goes at
a time until the answer to a call made after the 429 reports room again.

**Visibility.** :func:`limiter_state` lists every key's limits, remaining requests and
tokens, in-flight calls and the cap the provider's room sets on them, waiters per priority
and cool-down left.
"""

from core.ratelimit.limiter import (
    RateLimiter,
    Reservation,
    build_limiter,
    limiter_state,
)

__all__ = ["RateLimiter", "Reservation", "build_limiter", "limiter_state"]
