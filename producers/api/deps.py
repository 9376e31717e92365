"""What routes receive: typed ``Annotated`` dependencies over the per-process services.

``Services`` is built once in the app's lifespan (``main.py``) and kept on
``app.state``; routes take ``SettingsDep``, ``StoreDep``, ``CeleryDep``, ``WaiterDep``,
and ``MetricsDep`` instead of globals. Who is calling comes from
:mod:`producers.api.access.principal` (``JobsWrite``, ``JobsRead``, ...).
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Annotated

import redis
import redis.asyncio as aioredis
from celery import Celery
from fastapi import Depends, Request

from config.settings import Settings
from core.coalesce import Coalescer
from core.store import JobStore
from core.submit_script import Submitter
from producers.api.access.clients import RevocationCache
from producers.api.access.tokens import Tokens
from producers.api.auditlog import AuditLog
from producers.api.costs import CostServices
from producers.api.metrics import ApiMetrics
from producers.api.read_script import JobReader
from producers.api.waiter import JobWaiter


@dataclass
class Access:
    """What authenticates tokens: their keys, and which clients are revoked."""

    tokens: Tokens
    revocations: RevocationCache


@dataclass
class Services:
    """The API process's shared resources."""

    settings: Settings
    redis: redis.Redis
    aredis: aioredis.Redis
    store: JobStore
    celery: Celery
    waiter: JobWaiter
    metrics: ApiMetrics
    access: Access
    audit: AuditLog
    cost: CostServices
    batched: Coalescer  # the hot paths' commands, sent together
    submitter: Submitter
    reader: JobReader


def services_of(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


# Dependencies are coroutines: FastAPI runs a plain ``def`` one in the threadpool, a thread
# hop per request for an attribute lookup.
async def get_services(request: Request) -> Services:
    return services_of(request)


async def get_settings(request: Request) -> Settings:
    return services_of(request).settings


async def get_store(request: Request) -> JobStore:
    return services_of(request).store


async def get_celery(request: Request) -> Celery:
    return services_of(request).celery


async def get_waiter(request: Request) -> JobWaiter:
    return services_of(request).waiter


async def get_metrics(request: Request) -> ApiMetrics:
    return services_of(request).metrics


def resolve_tenant(key: str, settings: Settings) -> str | None:
    """The tenant a ``COURIER_API_KEYS`` key authenticates as, or None.

    Compares against every configured key in constant time (no early exit, so the
    time taken says nothing about which key nearly matched). Managed keys (kept in
    Redis by SHA-256 digest, :mod:`producers.api.apikeys`) are looked up by
    :func:`producers.api.access.principal.identify`.
    """
    presented = key.encode("utf-8", "surrogateescape")
    tenant: str | None = None
    for candidate, owner in settings.api_keys.items():
        if hmac.compare_digest(candidate.encode(), presented):
            tenant = owner
    return tenant


ServicesDep = Annotated[Services, Depends(get_services)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[JobStore, Depends(get_store)]
CeleryDep = Annotated[Celery, Depends(get_celery)]
WaiterDep = Annotated[JobWaiter, Depends(get_waiter)]
MetricsDep = Annotated[ApiMetrics, Depends(get_metrics)]
