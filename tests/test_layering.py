"""Imports point one way (README, *Code layout*): config ← core ← workers ← tasks, and
producers import only config and core (and the simulator, which ``courier simulate`` starts);
the simulator imports nothing of Courier. And the API
process loads no worker code, no provider SDK and no worker patch."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("config", "core", "workers", "tasks", "producers", "simulator")
# What each package may import of Courier's own packages.
ALLOWED = {
    "config": {"config"},
    "core": {"config", "core"},
    "workers": {"config", "core", "workers"},
    "tasks": {"config", "core", "workers", "tasks"},
    "producers": {"config", "core", "producers", "simulator"},  # `courier simulate` runs it
    "simulator": {"simulator"},
}


def courier_imports(path: Path) -> set[str]:
    """The top-level Courier packages a module imports (at any depth of the file)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found |= {name.split(".")[0] for name in names} & set(PACKAGES)
    return found


@pytest.mark.parametrize("package", PACKAGES)
def test_imports_point_one_way(package: str) -> None:
    wrong = {
        str(path.relative_to(ROOT)): sorted(courier_imports(path) - ALLOWED[package])
        for path in (ROOT / package).rglob("*.py")
    }
    assert {path: names for path, names in wrong.items() if names} == {}


def test_the_api_process_loads_no_worker_code_sdk_or_patch() -> None:
    probe = (
        "import sys, json\n"
        "from producers.api.main import create_app\n"
        "create_app()\n"
        "import kombu.transport.redis as r\n"
        "print(json.dumps({'modules': sorted(sys.modules), 'qos': r.Channel.QoS.__name__}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, check=True
    )
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    modules = loaded["modules"]
    assert loaded["qos"] == "QoS"  # kombu's own: workers.broker's fixes are not installed
    for forbidden in ("workers", "tasks", "gevent", "openai", "anthropic"):
        assert not [m for m in modules if m == forbidden or m.startswith(forbidden + ".")], (
            forbidden
        )
