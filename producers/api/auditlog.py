"""The audit log kept in Redis, per tenant, and read by ``GET /v1/audit``
(docs/contract.md, Access control).

One stream per tenant, ``courier:audit:<tenant>``; an entry's stream id is its time (ms),
so a time range is an ``XREVRANGE`` and the newest come first. Every entry has the same
fields, ``request_id``, ``client_ip``, ``actor``, ``action``, ``status``, ``duration_ms`` and
``job_id`` (empty when none), so Redis stores the field names once per stream node rather
than per entry (the bytes per entry are measured by ``python -m bench.audit_memory``).

Memory is bounded twice: each append trims the stream to the newest
``COURIER_AUDIT_MAX_ENTRIES`` (default 200,000) and drops entries older than
``COURIER_AUDIT_RETENTION_S`` (default 90 days; both trims approximate, by whole nodes), and
the key expires that long after its last entry. Reads never return an entry older than the
retention, whatever the trimming left.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis

from core import keys
from producers.api.audit_script import APPEND

log = logging.getLogger("courier.api.auditlog")
FIELDS = ("request_id", "client_ip", "actor", "action", "status", "duration_ms", "job_id")
PAGE = 500


def iso_ms(ms: int) -> str:
    return (
        datetime.fromtimestamp(ms / 1000, tz=UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def matches(action: str, wanted: str | None) -> bool:
    """``wanted`` is an action (``job.submit``) or a family (``job.*``); None: any."""
    if wanted is None:
        return True
    if wanted.endswith(".*"):
        return action.startswith(wanted[:-1])
    return action == wanted


class AuditLog:
    def __init__(self, client: aioredis.Redis, retention_s: int, max_entries: int) -> None:
        self.redis = client
        self.retention_ms = retention_s * 1000
        self.max_entries = max_entries
        self._pending: list[tuple[str, list[str]]] = []
        self._writer: asyncio.Future[None] | None = None
        self._append = client.register_script(APPEND)

    def append_soon(self, tenant: str, entry: dict[str, Any]) -> None:
        """Queue ``entry``: written at once, or — when a write is under way — with every
        entry queued meanwhile, in the next one (one round trip for all of them, each stream
        trimmed once). The request that made the entry does not wait for it: its answer is
        sent already, and uvicorn would hold the connection's next request until it
        returned. A read of the log (:meth:`query`) waits for what is queued before it."""
        self._pending.append((tenant, [_text(entry.get(name)) for name in FIELDS]))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.ensure_future(self._write_pending())

    async def append(self, tenant: str, entry: dict[str, Any]) -> None:
        """:meth:`append_soon`, returning once the entry is written."""
        self.append_soon(tenant, entry)
        await self.flush()

    async def flush(self) -> None:
        """Wait until every entry queued so far is written (a failed write is logged)."""
        while self._writer is not None and not self._writer.done():
            await asyncio.shield(self._writer)

    async def _write_pending(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                await self._write(batch)
            except Exception as exc:  # the trail must never cost a request its answer
                log.warning("audit: %d entries not written to Redis: %s", len(batch), exc)

    async def _write(self, batch: list[tuple[str, list[str]]]) -> None:
        streams: dict[str, int] = {}
        entries = [
            [streams.setdefault(keys.audit(tenant), len(streams) + 1), *values]
            for tenant, values in batch
        ]
        cutoff = int(time.time() * 1000) - self.retention_ms
        await self._append(
            keys=list(streams),
            args=[json.dumps(entries), self.max_entries, cutoff, self.retention_ms, *FIELDS],
        )

    async def query(
        self,
        tenant: str,
        since: float | None = None,
        until: float | None = None,
        action: str | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """The tenant's entries in [since, until] (epoch s), newest first, at most ``limit``."""
        await self.flush()
        oldest = int(time.time() * 1000) - self.retention_ms
        start = max(oldest, int(since * 1000) if since is not None else 0)
        end: str = str(int(until * 1000)) if until is not None else "+"
        found: list[dict[str, Any]] = []
        while len(found) < limit:
            page: list[tuple[str, dict[str, str]]] = await self.redis.xrevrange(  # type: ignore[assignment]
                keys.audit(tenant), end, str(start), count=PAGE
            )
            for stream_id, fields in page:
                if matches(fields.get("action", ""), action):
                    found.append(_entry(stream_id, fields))
                    if len(found) == limit:
                        break
            if len(page) < PAGE:
                break
            end = f"({page[-1][0]}"
        return found


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _entry(stream_id: str, fields: dict[str, str]) -> dict[str, Any]:
    ms = int(stream_id.split("-", 1)[0])
    status, duration = fields.get("status", ""), fields.get("duration_ms", "")
    return {
        "request_id": fields.get("request_id") or None,
        "timestamp": iso_ms(ms),
        "client_ip": fields.get("client_ip") or None,
        "actor": fields.get("actor") or None,
        "action": fields.get("action", ""),
        "status": int(status) if status.isdigit() else None,
        "duration_ms": float(duration) if duration else None,
        "job_id": fields.get("job_id") or None,
    }
