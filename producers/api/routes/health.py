"""``/healthz`` (the process answers), ``/readyz`` (Redis answers), ``/metrics``."""

from __future__ import annotations

import anyio
import redis
from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from producers.api import errors
from producers.api.deps import MetricsDep, ServicesDep

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness: the API process answers")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Readiness: Redis answers",
    responses=errors.responses(503),
)
async def readyz(services: ServicesDep) -> JSONResponse:
    try:
        with anyio.fail_after(2):
            await services.aredis.ping()
    except (redis.RedisError, OSError, TimeoutError) as exc:
        return errors.error_response(503, "unavailable", f"redis does not answer ({exc})")
    return JSONResponse({"status": "ready"})


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}},
)
def metrics(metrics: MetricsDep) -> Response:
    return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)
