"""A real HTTP server that receives webhooks in tests: scriptable, and it records everything.

Each path has its own script of answers (status, delay, headers, body), used in order;
once a script runs out (or for a path without one) it answers 200. Every request is
recorded with its headers and exact body bytes. The server runs in a thread of the test
process; ``stop()`` and ``start()`` take it down and bring it back on the same port.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import standardwebhooks
import svix.webhooks

from tests.support.procs import wait_until


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    at: float  # time.time() when the request was read

    def json(self) -> Any:
        return json.loads(self.body)

    def verify(self, secret: str) -> dict[str, Any]:
        """Check the Standard Webhooks signature with both ``standardwebhooks`` and
        ``svix`` (raises if either refuses); returns the event."""
        svix.webhooks.Webhook(secret).verify(self.body, self.headers)
        event: dict[str, Any] = standardwebhooks.Webhook(secret).verify(self.body, self.headers)
        return event


@dataclass(frozen=True)
class Answer:
    status: int = 200
    delay: float = 0.0
    headers: tuple[tuple[str, str], ...] = ()
    body: str = "ok"


class Receiver:
    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self._scripts: dict[str, list[Answer]] = {}
        self._received: list[Received] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None

    # ---- life ---------------------------------------------------------------

    def start(self) -> Receiver:
        self._stopping.clear()
        server = ThreadingHTTPServer((self.host, self.port), self._handler_class())
        server.daemon_threads = True
        self.port = int(server.server_address[1])
        self._server = server
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop listening (connections are refused) and cut short any delayed answer."""
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> Receiver:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    # ---- script and inspect ------------------------------------------------

    def url(self, path: str = "/hook", host: str | None = None) -> str:
        return f"http://{host or self.host}:{self.port}{path}"

    def script(self, path: str, answers: list[dict[str, Any]]) -> None:
        """Queue answers for ``path``, e.g. ``[{"status": 500}, {"status": 302,
        "headers": {"Location": "/x"}}, {"delay": 5}]``."""
        queued = [
            Answer(
                status=int(a.get("status", 200)),
                delay=float(a.get("delay", 0)),
                headers=tuple((a.get("headers") or {}).items()),
                body=str(a.get("body", "ok")),
            )
            for a in answers
        ]
        with self._lock:
            self._scripts.setdefault(path, []).extend(queued)

    def received(self, path: str | None = None) -> list[Received]:
        with self._lock:
            return [r for r in self._received if path is None or r.path == path]

    def wait_for(self, path: str, count: int, timeout: float = 20.0) -> list[Received]:
        """The first ``count`` requests to ``path``, once they have arrived."""
        try:
            wait_until(lambda: len(self.received(path)) >= count, timeout=timeout)
        except TimeoutError:
            got = self.received(path)
            raise TimeoutError(f"{path}: {len(got)} of {count} requests arrived") from None
        return self.received(path)[:count]

    # ---- serving ---------------------------------------------------------------

    def _next_answer(self, path: str) -> Answer:
        with self._lock:
            queue = self._scripts.get(path)
            return queue.pop(0) if queue else Answer()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"  # one request per connection: a stop cuts all

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                record = Received(
                    method="POST",
                    path=self.path,
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=body,
                    at=time.time(),
                )
                with receiver._lock:
                    receiver._received.append(record)
                answer = receiver._next_answer(self.path)
                if answer.delay and receiver._stopping.wait(answer.delay):
                    return
                payload = answer.body.encode()
                try:
                    self.send_response(answer.status)
                    for name, value in answer.headers:
                        self.send_header(name, value)
                    self.send_header("content-length", str(len(payload)))
                    self.send_header("connection", "close")
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:
                    pass  # the client gave up (a timeout): nothing to answer

            do_PUT = do_POST

            def log_message(self, format: str, *args: Any) -> None:
                return None

        return Handler
