"""A private Redis Sentinel deployment for tests: a master, its replicas and three Sentinels,
each a real ``redis-server`` on a free loopback port (``redis-server conf --sentinel`` is what
Debian's ``redis-sentinel`` runs). Sentinel's timings are shortened so that a failover takes
a few seconds instead of the default half minute."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import redis

from core.replication import replicas_in_sync
from tests.support.procs import free_port, wait_until

MASTER_NAME = "mymaster"
# Sentinel's defaults are 30 s and 3 min. At 1 s, a Sentinel on this loaded machine once found
# the just-promoted master silent for that long and failed over a second time (README, High
# availability); 3 s has not.
DOWN_AFTER_MS = 3000
FAILOVER_TIMEOUT_MS = 6000  # also: twice this before another failover of the same master


class Node:
    """One redis-server process (a data node or a Sentinel) in its own temp dir."""

    def __init__(self, binary: str, args: list[str], port: int, conf: str = "") -> None:
        self.port = port
        self.dir = Path(tempfile.mkdtemp(prefix="courier-ha-"))
        self.args = [binary, *args]
        if conf:
            path = self.dir / "sentinel.conf"  # Sentinel rewrites its own config file
            path.write_text(conf)
            self.args = [binary, str(path), "--sentinel"]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with (self.dir / "server.log").open("ab") as log:
            self.proc = subprocess.Popen(
                self.args, cwd=self.dir, stdout=log, stderr=subprocess.STDOUT
            )

    def client(self, **kwargs: object) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=5, **kwargs)  # type: ignore[arg-type]

    def kill9(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None

    def stop(self) -> None:
        self.kill9()
        if not os.environ.get("COURIER_TEST_KEEP_HA"):  # set it to read the nodes' logs
            shutil.rmtree(self.dir, ignore_errors=True)


class SentinelCluster:
    """A master, ``replicas`` replicas and three Sentinels watching them as ``mymaster``."""

    def __init__(self, replicas: int = 2, sentinels: int = 3) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (.ci/run installs it)")
        self.binary = binary
        self.data: list[Node] = []
        master_port = free_port()
        self.data.append(Node(binary, self._data_args(master_port), master_port))
        for _ in range(replicas):
            port = free_port()
            args = [*self._data_args(port), "--replicaof", "127.0.0.1", str(master_port)]
            self.data.append(Node(binary, args, port))
        self.sentinels = [self._sentinel(master_port) for _ in range(sentinels)]

    @staticmethod
    def _data_args(port: int) -> list[str]:
        return [
            "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--protected-mode", "no", "--maxmemory-policy", "noeviction",
            # A replica's first sync starts at once (the default waits 5 s for others).
            "--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0",
        ]  # fmt: skip

    def _sentinel(self, master_port: int) -> Node:
        port = free_port()
        conf = "\n".join(
            [
                f"port {port}",
                "bind 127.0.0.1",
                "protected-mode no",
                f"sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} 2",
                f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}",
                f"sentinel failover-timeout {MASTER_NAME} {FAILOVER_TIMEOUT_MS}",
                f"sentinel parallel-syncs {MASTER_NAME} 1",
                "",
            ]
        )
        return Node(self.binary, [], port, conf)

    # ---- what a Courier process is given ------------------------------------------------

    @property
    def sentinels_setting(self) -> str:
        """COURIER_REDIS_SENTINELS for this deployment."""
        return ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)

    def env(self) -> dict[str, str]:
        return {
            "COURIER_REDIS_SENTINELS": self.sentinels_setting,
            "COURIER_REDIS_SENTINEL_MASTER": MASTER_NAME,
            # Host and port are Sentinel's to say; the URL still names the database.
            "COURIER_REDIS_URL": "redis://sentinel-managed/0",
        }

    # ---- life cycle --------------------------------------------------------------------

    def start(self, timeout: float = 30) -> None:
        for node in (*self.data, *self.sentinels):
            node.start()
        try:
            self.wait_ready(timeout)
        except Exception:
            self.stop()
            raise

    def wait_ready(self, timeout: float = 30) -> None:
        """Every replica in sync, and every Sentinel knowing the replicas and the other
        Sentinels (without those, no failover can be agreed)."""
        replicas = len(self.data) - 1
        master = self.master_node()
        wait_until(lambda: self._synced_replicas(master) >= replicas, timeout=timeout)
        others = len(self.sentinels) - 1

        def sentinels_know_all() -> bool:
            for sentinel in self.sentinels:
                with sentinel.client(decode_responses=True) as client:
                    state = client.sentinel_master(MASTER_NAME)
                    if int(state["num-other-sentinels"]) < others:
                        return False
                    if int(state["num-slaves"]) < replicas:
                        return False
            return True

        wait_until(sentinels_know_all, timeout=timeout, interval=0.2)

    @staticmethod
    def _synced_replicas(master: Node) -> int:
        with master.client(decode_responses=True) as client:
            return replicas_in_sync(client)

    def master_address(self) -> tuple[str, int]:
        """The master as the Sentinels name it now."""
        for sentinel in self.sentinels:
            if sentinel.proc is None:
                continue
            try:
                with sentinel.client(decode_responses=True) as client:
                    host, port = client.sentinel_get_master_addr_by_name(MASTER_NAME)
                    return str(host), int(port)
            except redis.RedisError:
                continue
        raise RuntimeError("no Sentinel answers")

    def master_node(self) -> Node:
        _, port = self.master_address()
        return next(node for node in self.data if node.port == port)

    def kill_master(self) -> Node:
        """SIGKILL the master (it stays down); returns its node."""
        master = self.master_node()
        master.kill9()
        return master

    def wait_failover(self, old: Node, timeout: float = 30) -> Node:
        """The replica the Sentinels promoted once ``old`` died, once every Sentinel names it
        and it answers as a master (clients may ask any Sentinel)."""

        def converged() -> bool:
            for sentinel in self.sentinels:
                with sentinel.client(decode_responses=True) as client:
                    state = client.sentinel_master(MASTER_NAME)
                    if int(state["port"]) == old.port or state["flags"] != "master":
                        return False
            return True

        wait_until(converged, timeout=timeout, interval=0.1)
        new = self.master_node()
        with new.client(decode_responses=True) as client:
            wait_until(lambda: client.info("replication")["role"] == "master", timeout=timeout)
        return new

    def stop(self) -> None:
        for node in (*self.sentinels, *self.data):
            node.stop()
