"""A second test host: a network namespace joined to this one by veth links.

Each link is its own /24 so it can be cut alone (``ip link set … down``) — e.g. cut the
worker off from Redis while it can still reach the provider.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from dataclasses import dataclass, field


def netns_available() -> bool:
    return os.geteuid() == 0 and shutil.which("ip") is not None


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@dataclass
class NetnsHost:
    name: str = field(default_factory=lambda: f"cw{uuid.uuid4().hex[:6]}")
    links: dict[str, tuple[str, str]] = field(default_factory=dict)  # link → (host ip, ns ip)

    def create(self) -> None:
        _ip("netns", "add", self.name)
        _ip("-n", self.name, "link", "set", "lo", "up")

    def add_link(self, label: str, subnet: int) -> tuple[str, str]:
        """A veth pair on 10.231.<subnet>.0/24: returns (host-side ip, namespace-side ip)."""
        host_if, ns_if = f"{self.name}{label}h", f"{self.name}{label}n"
        host_ip, ns_ip = f"10.231.{subnet}.1", f"10.231.{subnet}.2"
        _ip("link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        _ip("link", "set", ns_if, "netns", self.name)
        _ip("addr", "add", f"{host_ip}/24", "dev", host_if)
        _ip("link", "set", host_if, "up")
        _ip("-n", self.name, "addr", "add", f"{ns_ip}/24", "dev", ns_if)
        _ip("-n", self.name, "link", "set", ns_if, "up")
        self.links[label] = (host_if, ns_if)
        return host_ip, ns_ip

    def cut(self, label: str) -> None:
        _ip("link", "set", self.links[label][0], "down")

    def restore(self, label: str) -> None:
        _ip("link", "set", self.links[label][0], "up")

    def command(self, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.name, *argv]

    def destroy(self) -> None:
        for host_if, _ in self.links.values():
            subprocess.run(["ip", "link", "del", host_if], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)
