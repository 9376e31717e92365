"""Test-only admin endpoints under ``/_sim/``.

=====================  ==========================================================
``GET /_sim/health``   ``{"ok": true}``
``POST /_sim/reset``   clear log, faults and rate windows; restore start-up config
``GET /_sim/config``   the live config
``POST /_sim/config``  change any of ``latency``, ``error_rate``, ``rpm``, ``tpm``,
                       ``seed``, ``fault_mix`` (``{"429": 0.15, "500": 0.1}``),
                       ``stream_tps``, ``record_stream_times``, ``record_messages``
                       (log each request's ``messages`` and ``system`` as received);
                       answers the new config
``GET /_sim/faults``   scripted faults still queued
``POST /_sim/faults``  ``{"faults": [{"status", "retry_after", "message"} |
                       {"delay"} | {"stream_fault", "after_chunks"}],
                       "match": "substring"?}`` queued FIFO
``DELETE /_sim/faults`` clear them
``POST /_sim/outage``  ``{"seconds": N, "status": 503?, "match": "model"?}``: down
                       for N seconds, then recovered by itself
``GET /_sim/outage``   ``{"down", "remaining_s", "status", "match"}``
``DELETE /_sim/outage`` recover now
``GET /_sim/log``      ``{"requests": [...], "next": N}``; ``?since=N`` pages
=====================  ==========================================================

A log entry says what reached the simulator: ``path``, ``model``, ``key_suffix`` and
``key_sha256`` (``sha256(key)[:12]``; never the key), ``key_header``, ``headers`` (those not
every SDK request carries, credentials excepted), ``api_version``, ``prompt``, ``status``,
token counts and times.
"""

from __future__ import annotations

import json
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from simulator.errors import json_response
from simulator.faults import Fault, Outage
from simulator.state import SimState


def _bad(message: str) -> Response:
    return json_response({"ok": False, "error": message}, 400)


async def _json(request: Request) -> Any:
    raw = await request.body()
    return json.loads(raw) if raw.strip() else {}


def admin_routes(state: SimState) -> list[Route]:
    async def health(request: Request) -> Response:
        return json_response({"ok": True})

    async def reset(request: Request) -> Response:
        state.reset()
        return json_response({"ok": True, "config": state.config.to_json()})

    async def config(request: Request) -> Response:
        if request.method == "POST":
            try:
                state.configure(await _json(request))
            except ValueError as exc:
                return _bad(str(exc))
        return json_response(state.config.to_json())

    async def faults(request: Request) -> Response:
        if request.method == "DELETE":
            state.faults.clear()
        elif request.method == "POST":
            try:
                body = await _json(request)
                if not isinstance(body, dict) or not isinstance(body.get("faults"), list):
                    raise ValueError('body must be {"faults": [...], "match": "..."}')
                match = body.get("match")
                if match is not None and not isinstance(match, str):
                    raise ValueError("match must be a string")
                state.faults.add([Fault.parse(raw, match) for raw in body["faults"]])
            except ValueError as exc:
                return _bad(str(exc))
        return json_response({"faults": [f.to_json() for f in state.faults.pending()]})

    async def outage(request: Request) -> Response:
        now = time.monotonic()
        if request.method == "DELETE":
            state.outage = None
        elif request.method == "POST":
            try:
                state.outage = Outage.parse(await _json(request), now)
            except ValueError as exc:
                return _bad(str(exc))
        current = state.outage or Outage(until=now)
        return json_response(current.to_json(now))

    async def log(request: Request) -> Response:
        try:
            since = int(request.query_params.get("since", "0"))
        except ValueError:
            return _bad("since must be an integer")
        return json_response({"requests": state.log.since(since), "next": state.log.total})

    return [
        Route("/_sim/health", health, methods=["GET"]),
        Route("/_sim/reset", reset, methods=["POST"]),
        Route("/_sim/config", config, methods=["GET", "POST"]),
        Route("/_sim/faults", faults, methods=["GET", "POST", "DELETE"]),
        Route("/_sim/outage", outage, methods=["GET", "POST", "DELETE"]),
        Route("/_sim/log", log, methods=["GET"]),
    ]
