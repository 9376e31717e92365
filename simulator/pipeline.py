"""The path every API request takes, whatever the provider.

1. log the arrival; 2. require an API key (401); 3. parse the body (400);
4. an outage answers its status at once; else a scripted fault, else the
   ``--fault-mix`` or ``--error-rate`` dice: answer an error status, or sleep and
   go on; 5. admit against the key's RPM/TPM window (429 with ``retry-after``,
   answered at once, without latency); 6. sleep ``latency``;
7. answer. Streams sleep the latency before the first byte, then send all
   their events in one write, or one event every 1/``stream_tps`` s when that is
   set; a scripted ``stream_fault`` breaks them (:mod:`simulator.faults`).

A :class:`Dialect` supplies the provider-specific parts: where the key is,
what a body means, and how answers and errors look.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from simulator.errors import BadRequest
from simulator.faults import Fault, mixed_fault, random_fault
from simulator.limits import Decision, Snapshot, retry_headers
from simulator.state import SimState


@dataclass(slots=True)
class Call:
    """A parsed request: what the pipeline needs, plus the dialect's own ``payload``."""

    model: str
    text: str  # all message text, for fault matching
    prompt: str  # the last user message text, for the log
    input_tokens: int
    output_tokens: int = 0
    stream: bool = False
    payload: Any = None
    plan: StreamPlan | None = None


@dataclass(slots=True)
class StreamPlan:
    """How a streamed answer goes out: its pace, its fault, where to log send times."""

    tps: float = 0.0
    fault: Fault | None = None
    times: list[float] | None = None


class Dialect(Protocol):
    """One provider endpoint's wire format."""

    provider: str  # "openai" | "anthropic" | "azure"

    def api_key(self, headers: Headers) -> str | None: ...

    def parse(self, body: Any) -> Call: ...

    def error(
        self,
        status: int,
        message: str | None,
        headers: dict[str, str],
        *,
        param: str | None = None,
        error_type: str | None = None,
    ) -> Response: ...

    def rate_headers(self, snapshot: Snapshot | None, wall_now: float) -> dict[str, str]: ...

    def respond(self, call: Call, request_id: str, headers: dict[str, str]) -> Response:
        """The success answer."""
        ...


def new_request_id() -> str:
    return "req_" + os.urandom(12).hex()


def bearer_token(headers: Headers) -> str | None:
    auth = headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


async def handle(state: SimState, dialect: Dialect, request: Request) -> Response:
    """Answer one API request (see the module docstring for the order of checks)."""
    request_id = new_request_id()
    entry = state.log.open(request_id, request.url.path, time.time())
    headers = {"x-request-id": request_id, "request-id": request_id}

    def finish(response: Response) -> Response:
        entry["status"] = response.status_code
        entry["finished"] = time.time()
        return response

    key = dialect.api_key(request.headers)
    if not key:
        return finish(dialect.error(401, _missing_key_message(dialect), headers))
    record_caller(entry, request, key)

    try:
        body = json.loads(await request.body())
        if state.config.record_messages and isinstance(body, dict):
            entry["messages"] = body.get("messages")  # exactly as received, for tests
            entry["system"] = body.get("system")
        call = dialect.parse(body)
    except BadRequest as exc:
        return finish(dialect.error(400, exc.message, headers, param=exc.param))
    except ValueError as exc:
        return finish(dialect.error(400, f"Could not parse the JSON body: {exc}", headers))
    entry["model"] = call.model
    entry["prompt"] = call.prompt
    entry["input_tokens"] = call.input_tokens

    config = state.config
    outage = state.outage
    if outage is not None and outage.applies(call.model, time.monotonic()):
        return finish(dialect.error(outage.status, "Simulated outage", headers))
    fault = state.faults.take(call.model, call.text, call.stream)
    if fault is None and config.fault_mix:
        fault = mixed_fault(state.rng, config.fault_mix)
    elif fault is None:
        fault = random_fault(state.rng, config.error_rate, dialect.provider)
    if call.stream:
        times: list[float] | None = None
        if config.record_stream_times:
            times = entry.setdefault("stream_times", [])
        stream_fault = fault if fault is not None and fault.stream_fault else None
        call.plan = StreamPlan(config.stream_tps, stream_fault, times)
        if stream_fault is not None:
            fault = None
    if fault is not None:
        if fault.status is not None:
            snapshot = state.limiter.peek(key, time.monotonic(), config.rpm, config.tpm)
            fault_headers = {**headers, **dialect.rate_headers(snapshot, time.time())}
            if fault.retry_after is not None:
                fault_headers.update(retry_headers(fault.retry_after))
            return finish(dialect.error(fault.status, fault.message, fault_headers))
        await asyncio.sleep(fault.delay)
        config = state.config

    cost = call.input_tokens + call.output_tokens
    decision = state.limiter.admit(key, cost, time.monotonic(), config.rpm, config.tpm)
    headers.update(dialect.rate_headers(decision.snapshot, time.time()))
    if not decision.allowed:
        headers.update(retry_headers(decision.retry_after))
        error_type = "tokens" if decision.reason in ("tokens", "too_large") else "requests"
        message = _rate_message(decision, config.rpm, config.tpm, cost)
        return finish(dialect.error(429, message, headers, error_type=error_type))

    if config.latency > 0:
        await asyncio.sleep(config.latency)
    entry["output_tokens"] = call.output_tokens
    return finish(dialect.respond(call, request_id, headers))


# What every SDK request carries: not worth a line in the log. The rest (``anthropic-version``,
# a provider's configured headers) is recorded, credentials excepted.
ROUTINE_HEADERS = frozenset(
    {"host", "content-length", "content-type", "accept", "accept-encoding", "connection",
     "user-agent"}
)  # fmt: skip
KEY_HEADERS = ("authorization", "api-key", "x-api-key")


def record_caller(entry: dict[str, Any], request: Request, key: str) -> None:
    """Note in the log entry who called and how: the key's last four characters and digest
    (never the key), the header that carried it, the other headers worth a look and the
    ``api-version`` asked for."""
    entry["key_suffix"] = key[-4:]
    entry["key_sha256"] = hashlib.sha256(key.encode()).hexdigest()[:12]
    entry["key_header"] = next((h for h in KEY_HEADERS if h in request.headers), None)
    entry["headers"] = {
        name: value
        for name, value in request.headers.items()
        if name not in ROUTINE_HEADERS
        and name not in KEY_HEADERS
        and not name.startswith("x-stainless-")
    }
    entry["api_version"] = request.query_params.get("api-version")


SSE_TYPE = "text/event-stream; charset=utf-8"
STALL_S = 3600.0
# Not JSON: named as an Anthropic event too, so that both SDKs try to parse it.
MALFORMED_FRAME = b'event: content_block_delta\ndata: {"type": "content_block_delta", "cut\n\n'


class DroppedStream(Exception):
    """Raised inside a streamed answer to cut its connection (``stream_fault: drop``)."""


def sse_response(
    frames: Sequence[bytes], headers: dict[str, str], plan: StreamPlan | None = None
) -> Response:
    """A ``text/event-stream`` answer. Unpaced and unbroken, all frames go out in one write
    (the latency was slept before it): clients parse SSE the same way, for a fraction of
    the CPU."""
    if plan is None or (plan.tps <= 0 and plan.fault is None and plan.times is None):
        return Response(b"".join(frames), 200, headers, SSE_TYPE)
    return StreamingResponse(_paced(frames, plan), 200, headers, SSE_TYPE)


async def _paced(frames: Sequence[bytes], plan: StreamPlan) -> AsyncIterator[bytes]:
    loop = asyncio.get_running_loop()
    start = loop.time()
    fault = plan.fault
    for index, frame in enumerate(frames):
        if fault is not None and index == fault.after_chunks:
            if fault.stream_fault == "drop":
                raise DroppedStream("stream_fault: drop")
            if fault.stream_fault == "malformed":
                yield MALFORMED_FRAME
            elif fault.stream_fault == "stall":
                await asyncio.sleep(STALL_S)
            return
        if plan.tps > 0 and index:
            delay = start + index / plan.tps - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
        yield frame
        if plan.times is not None:
            plan.times.append(time.time())


def _missing_key_message(dialect: Dialect) -> str:
    if dialect.provider == "anthropic":
        return "x-api-key header is required"
    if dialect.provider == "azure":
        return (
            "Access denied due to invalid subscription key or wrong API endpoint. Make sure "
            "to provide a valid key for an active subscription and use a correct regional "
            "API endpoint for your resource."
        )
    return (
        "You didn't provide an API key. You need to provide your API key in an "
        "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
    )


def _rate_message(decision: Decision, rpm: int, tpm: int, cost: int) -> str:
    wait = f"Please try again in {decision.retry_after:.3f}s."
    if decision.reason == "too_large":
        return f"Request too large: {cost} tokens exceed the limit of {tpm} tokens per min."
    if decision.reason == "tokens":
        return f"Rate limit reached for tokens per min (TPM): Limit {tpm}. {wait}"
    return f"Rate limit reached for requests per min (RPM): Limit {rpm}. {wait}"
