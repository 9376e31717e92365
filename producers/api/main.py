"""The ASGI app: ``uvicorn producers.api:app`` (or ``courier api``)."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio.to_thread
import redis
from fastapi import FastAPI

from config.settings import Settings, get_settings
from core.celery_app import app as celery_app
from core.coalesce import Coalescer
from core.connections import store_async_client, store_client, url_credentials
from core.store import JobStore
from core.submit_script import Submitter
from core.task_message import RunJobMessages
from producers.api import docs, errors, openapi
from producers.api.access.clients import RevocationCache
from producers.api.access.tokens import Tokens
from producers.api.auditlog import AuditLog
from producers.api.bodylimit import BodyLimitMiddleware
from producers.api.costs import CostServices
from producers.api.deps import Access, Services
from producers.api.limits import HeaderLimitMiddleware
from producers.api.live import EventHub
from producers.api.metrics import ApiMetrics, RequestMetricsMiddleware
from producers.api.read_script import JobReader
from producers.api.routes import audit, clients, conversations, events, health, jobs, oauth, usage
from producers.api.waiter import JobWaiter

log = logging.getLogger("courier.api")
GC_YOUNG_THRESHOLD = 20_000
THREADS = 200  # sync routes run in anyio's threadpool; each may hold one Redis connection


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        anyio.to_thread.current_default_thread_limiter().total_tokens = THREADS
        client = store_client(settings, THREADS + 20)
        tokens = Tokens.from_settings(settings, client)  # production: refuses without a key
        aclient = store_async_client(settings, max_connections=500)
        waiter = JobWaiter(aclient)
        waiter.start()
        hub = EventHub(aclient)
        hub.start()
        app.state.hub = hub
        metrics = ApiMetrics(
            client, waiting=lambda: waiter.waiting, streams=lambda: hub.open_streams
        )
        store = JobStore.from_settings(client, settings)
        access = Access(tokens, RevocationCache(aclient, settings.token_revocation_check_s))
        audit_log = AuditLog(aclient, settings.audit_retention_s, settings.audit_max_entries)
        cost = CostServices.build(settings, client)
        try:
            cost.ledger.seed(settings.budgets)
        except redis.RedisError as exc:  # a worker seeds it too; the next start again
            log.warning("COURIER_BUDGETS not written to Redis: %s", exc)
        # One Lua call stores and queues a job when the broker is the job store's Redis.
        messages = (
            RunJobMessages(celery_app, url_credentials(settings.redis_url)["db"])
            if settings.broker_is_store
            else None
        )
        batched = Coalescer(aclient)
        submitter = Submitter(batched, store, messages)
        app.state.services = Services(
            settings, client, aclient, store, celery_app, waiter, metrics, access, audit_log,
            cost, batched, submitter, JobReader(batched),
        )  # fmt: skip
        # What start-up built (FastAPI, pydantic, the SDK-free app: most of the heap) stays
        # for good: out of every collection, or each old-generation collection walks it
        # (tens of ms) while thousands of event streams wait (README, Live events).
        gc.freeze()
        # A request allocates a few thousand objects, nearly all freed by reference counting:
        # at the default threshold (700) the young generation is scanned every request or
        # so, for the few cycles a request leaves.
        gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
        try:
            yield
        finally:
            await audit_log.flush()
            await waiter.stop()
            await hub.stop()
            await aclient.aclose()
            client.close()

    app = FastAPI(
        title="Courier",
        version="0.1.0",
        description="Long AI jobs on Celery + Redis: submit, poll or get a signed webhook.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    errors.install(app)
    openapi.install(app)
    docs.install(app)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(HeaderLimitMiddleware, max_bytes=settings.max_header_bytes)
    app.add_middleware(
        RequestMetricsMiddleware,
        metrics=lambda: getattr(getattr(app.state, "services", None), "metrics", None),
    )
    app.include_router(jobs.hot)
    app.include_router(jobs.router)
    app.include_router(oauth.router)
    app.include_router(clients.router)
    app.include_router(audit.router)
    app.include_router(usage.router)
    app.include_router(events.router)
    app.include_router(conversations.router)
    app.include_router(health.router)
    return app
