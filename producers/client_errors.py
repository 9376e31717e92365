"""The Python client's error for an error answer of the API (or of its token endpoint)."""

from __future__ import annotations


class CourierAPIError(Exception):
    """An error answer of the API: its HTTP status, error type and message."""

    def __init__(
        self, status: int, type: str, message: str, retry_after: float | None = None
    ) -> None:
        super().__init__(f"{status} {type}: {message}")
        self.status = status
        self.type = type
        self.message = message
        self.retry_after = retry_after  # seconds, from the answer's Retry-After
