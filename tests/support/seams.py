"""Fakes for the seams of the job path, for unit tests with no worker process and no waiting.

The job store, the circuit breaker and the sweeper's lock run on the real Redis of the test
session (``redis_client``); what stands in is what the runner takes as a parameter: the
providers (``get_provider``), the rate limiter and ``sleep``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import redis

from config.settings import Settings
from core.errors import CourierError
from core.results import ProviderResult, Usage
from core.store import JobStore
from workers.run.ports import Reservation
from workers.runtime import Runtime

# One step of a model's script: an answer, an error to raise, or a call made at that moment
# (to change the job while the provider "runs"; it may return an answer or raise).
Step = ProviderResult | CourierError | Callable[[], ProviderResult]


def make_runtime(client: redis.Redis, **settings: Any) -> Runtime:
    """A worker's runtime on the test Redis (``settings`` override Courier's defaults)."""
    return Runtime(Settings(**settings), client, JobStore(client, retention_s=3600))


def answer(model: str, output: str = "ok") -> ProviderResult:
    return ProviderResult(
        model=model, finish_reason="stop", usage=Usage(7, 3), latency_ms=12, output=output
    )


@dataclass(frozen=True, slots=True)
class Call:
    model: str  # provider:model
    kind: str  # chat | embedding
    timeout: float
    request: Mapping[str, Any]


class FakeProviders:
    """``get_provider`` for the runner: each ``provider:model`` plays its script, a step a
    call; a model with no steps left answers ``answer(model)``. Every call is recorded."""

    def __init__(self, scripts: Mapping[str, list[Step]] | None = None) -> None:
        self.scripts = {model: list(steps) for model, steps in (scripts or {}).items()}
        self.calls: list[Call] = []

    def __call__(self, provider: str) -> FakeProvider:
        return FakeProvider(self, provider)

    @property
    def models(self) -> list[str]:
        return [call.model for call in self.calls]

    def play(self, call: Call) -> ProviderResult:
        self.calls.append(call)
        steps = self.scripts.get(call.model) or []
        step = steps.pop(0) if steps else answer(call.model)
        if isinstance(step, CourierError):
            raise step
        return step if isinstance(step, ProviderResult) else step()


@dataclass
class FakeProvider:
    owner: FakeProviders
    name: str

    def complete(self, model: str, request: Mapping[str, Any], *, timeout: float) -> ProviderResult:
        return self.owner.play(Call(f"{self.name}:{model}", "chat", timeout, request))

    def stream_complete(
        self,
        model: str,
        request: Mapping[str, Any],
        *,
        timeout: float,
        chunk_timeout: float,
        on_text: Callable[[str], None],
    ) -> ProviderResult:
        result = self.owner.play(Call(f"{self.name}:{model}", "chat", timeout, request))
        on_text(result.output or "")
        return result

    def embed(self, model: str, request: Mapping[str, Any], *, timeout: float) -> ProviderResult:
        return self.owner.play(Call(f"{self.name}:{model}", "embedding", timeout, request))


@dataclass
class Grant:
    """A limiter's answer (a ``workers.run.runner.Reservation``)."""

    granted: bool = True
    wait_s: float = 0.0
    reason: str = ""


@dataclass
class FakeLimiter:
    """Answers ``verdicts`` in turn (then grants); records what is reserved and settled."""

    verdicts: list[Grant] = field(default_factory=list)
    reserved: list[tuple[str, str, str | None]] = field(default_factory=list)
    settled: list[tuple[Reservation, ProviderResult | None, CourierError | None]] = field(
        default_factory=list
    )

    def reserve(
        self,
        model: str,
        request: dict[str, Any],
        priority: str,
        job_id: str | None = None,
        tenant: str = "",
    ) -> Grant:
        self.reserved.append((model, priority, job_id))
        return self.verdicts.pop(0) if self.verdicts else Grant()

    def settle(
        self,
        reservation: Reservation,
        result: ProviderResult | None,
        error: CourierError | None,
    ) -> None:
        self.settled.append((reservation, result, error))


@dataclass
class FakeSleep:
    """Records each delay instead of waiting; ``then`` is what happens meanwhile (the job is
    cancelled, expires, …)."""

    then: Callable[[float], object] | None = None
    delays: list[float] = field(default_factory=list)

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        if self.then is not None:
            self.then(seconds)
