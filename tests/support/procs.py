"""Start and stop real processes for tests: servers, workers, the simulator."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(
    predicate: Callable[[], bool], timeout: float = 20.0, interval: float = 0.05
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except Exception:
            pass
        time.sleep(interval)
    raise TimeoutError(f"condition not met within {timeout}s")


def wait_http(url: str, timeout: float = 20.0) -> None:
    wait_until(lambda: httpx.get(url, timeout=1).status_code < 500, timeout)


class Proc:
    """A child process whose output goes to a log file (read it with ``.output()``)."""

    def __init__(self, args: Sequence[str], env: dict[str, str] | None = None, name: str = "proc"):
        self.log_path = Path(os.environ.get("COURIER_TEST_LOGDIR", "/tmp")) / (
            f"courier-test-{name}-{os.getpid()}-{time.monotonic_ns()}.log"
        )
        self._log = self.log_path.open("wb")
        full_env = {**os.environ, **(env or {})}
        self.popen = subprocess.Popen(
            list(args),
            cwd=ROOT,
            env=full_env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def output(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            os.killpg(self.popen.pid, sig)

    def stop(self, timeout: float = 15.0) -> int | None:
        if self.alive():
            self.signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.popen.wait(5)
        self._log.close()
        return self.popen.returncode

    def kill9(self) -> None:
        self.signal(signal.SIGKILL)
        self.popen.wait(10)


def python_module(
    module: str, *args: str, env: dict[str, str] | None = None, name: str = ""
) -> Proc:
    return Proc([sys.executable, "-m", module, *args], env=env, name=name or module)
