"""What managed API keys and OAuth2 clients share: a tenant's credential, known by id,
created at a time and perhaps revoked since (epoch seconds in Redis, ISO 8601 in answers)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any


def iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


@dataclass(frozen=True, slots=True)
class Revocable:
    """A credential's public facts (never its secret)."""

    id: str
    tenant: str
    created: float
    revoked: float | None

    @property
    def active(self) -> bool:
        return self.revoked is None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "tenant": self.tenant,
            "created": iso(self.created),
            "revoked": iso(self.revoked) if self.revoked is not None else None,
        }

    @staticmethod
    def fields(record: dict[str, str]) -> dict[str, Any]:
        """The shared fields of a stored record (a Redis hash), for a subclass's constructor."""
        revoked = record.get("revoked") or ""
        return {
            "id": record.get("id", ""),
            "tenant": record.get("tenant", ""),
            "created": float(record.get("created") or 0),
            "revoked": float(revoked) if revoked else None,
        }
