"""What the runner asks of its collaborators that live elsewhere: the cluster-wide rate
limiter (:mod:`core.ratelimit`) and its reservations."""

from __future__ import annotations

from typing import Any, Protocol

from core.errors import CourierError
from core.results import ProviderResult


class Reservation(Protocol):
    granted: bool
    wait_s: float
    reason: str


class Limiter(Protocol):
    """Cluster-wide rate limits (see core.ratelimit); the runner only asks and settles."""

    def reserve(
        self,
        model: str,
        request: dict[str, Any],
        priority: str,
        job_id: str | None = None,
        tenant: str = "",
    ) -> Reservation:
        """``job_id`` keeps a refused job's place in the limiter's line across hand-backs;
        ``tenant`` places it in the fair order between tenants."""
        ...

    def settle(
        self,
        reservation: Reservation,
        result: ProviderResult | None,
        error: CourierError | None,
    ) -> None: ...
