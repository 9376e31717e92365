"""A lean SSE reader for the streaming bench: raw asyncio connections, HTTP/1.1 chunked
bodies parsed by hand. httpx costs far more CPU per event, and on this 2-core machine the
reader shares the CPU with everything it measures.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit


@dataclass
class Received:
    """What one stream received: each event with its arrival time (epoch seconds)."""

    job_id: str
    events: list[tuple[float, int, str, Any]] = field(default_factory=list)
    keepalives: int = 0
    status: int = 0
    error: str | None = None
    opened_at: float = 0.0  # when the response head arrived

    @property
    def ended(self) -> bool:
        return (
            bool(self.events)
            and self.events[-1][2].startswith("job.")
            and (self.events[-1][2] != "job.status")
        )


async def read_stream(
    base_url: str, api_key: str, job_id: str, opened: asyncio.Event | None = None
) -> Received:
    """Follow one job's events until the server closes the stream."""
    got = Received(job_id)
    parts = urlsplit(base_url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    request = (
        f"GET /v1/jobs/{job_id}/events HTTP/1.1\r\nHost: {parts.netloc}\r\n"
        f"Authorization: Bearer {api_key}\r\nAccept: text/event-stream\r\n\r\n"
    )
    writer.write(request.encode())
    try:
        head = await reader.readuntil(b"\r\n\r\n")
        got.status = int(head.split(b" ", 2)[1])
        got.opened_at = time.time()
        if opened is not None:
            opened.set()
        if got.status != 200:
            return got
        buffer = b""
        while True:
            size_line = await reader.readline()
            size = int(size_line.strip() or b"0", 16)
            if size == 0:
                break
            data = await reader.readexactly(size + 2)
            now = time.time()
            buffer += data[:-2]
            while b"\n\n" in buffer:
                frame, buffer = buffer.split(b"\n\n", 1)
                if frame.startswith(b":"):
                    got.keepalives += 1
                    continue
                fields = dict(line.split(b": ", 1) for line in frame.split(b"\n"))
                got.events.append(
                    (
                        now,
                        int(fields[b"id"]),
                        fields[b"event"].decode(),
                        json.loads(fields[b"data"]),
                    )
                )
    except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
        got.error = f"{type(exc).__name__}: {exc}"
    finally:
        writer.close()
    return got
