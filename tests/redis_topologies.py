"""Real highly available Redis set-ups on free loopback ports, started from `redis-server`.

`SentinelSet`: one master, one replica and three sentinels (`redis-server --sentinel`) that
fail over within seconds (`down-after-milliseconds` 1000). `ClusterSet`: three masters joined
by `redis-cli --cluster create`. Both flush between tests and stop everything they started.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis as redis_lib
from redis.crc import key_slot

from tests.helpers import STARTUP_TIMEOUT_S, free_port, redis_server_binary

MASTER = "gwmaster"
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 3000


def _client(port: int) -> redis_lib.Redis:
    return redis_lib.Redis(host="127.0.0.1", port=port, socket_timeout=2)


def _query(port: int, *command: str) -> object:
    with _client(port) as client:
        return client.execute_command(*command)


def _until(what: str, ready: Callable[[], bool]) -> None:
    """Poll `ready` (a condition on another process, which no event reports) until it holds."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            if ready():
                return
        except redis_lib.RedisError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"redis set-up: {what} did not happen in {STARTUP_TIMEOUT_S} s")


class _Processes:
    """redis-server processes of one set-up, each with its own port and folder."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.processes: dict[int, subprocess.Popen[bytes]] = {}

    def start(self, port: int, *args: str) -> None:
        folder = self.workdir / str(port)
        folder.mkdir(parents=True, exist_ok=True)
        self.processes[port] = subprocess.Popen(
            [
                redis_server_binary(),
                *args,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(folder),
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _until(f"redis on {port}", lambda: _query(port, "PING") is True)

    def kill(self, port: int) -> None:
        """SIGKILL: no shutdown, nothing flushed, as a crashed machine."""
        process = self.processes.pop(port)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)

    def stop(self) -> None:
        for process in self.processes.values():
            process.terminate()
        for process in self.processes.values():
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes.clear()


class SentinelSet:
    """A master, its replica and three sentinels with quorum 2."""

    def __init__(self, workdir: Path) -> None:
        self.processes = _Processes(workdir)
        self.master_port, self.replica_port = free_port(), free_port()
        self.sentinel_ports = [free_port() for _ in range(3)]

    @property
    def url(self) -> str:
        nodes = ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)
        return f"redis+sentinel://{nodes}/{MASTER}/0"

    def start(self) -> SentinelSet:
        self.processes.start(self.master_port)
        self.processes.start(self.replica_port, "--replicaof", "127.0.0.1", str(self.master_port))
        for port in self.sentinel_ports:
            config = self.processes.workdir / f"sentinel-{port}.conf"
            config.write_text(
                f"sentinel monitor {MASTER} 127.0.0.1 {self.master_port} 2\n"
                f"sentinel down-after-milliseconds {MASTER} {DOWN_AFTER_MS}\n"
                f"sentinel failover-timeout {MASTER} {FAILOVER_TIMEOUT_MS}\n"
                f"sentinel parallel-syncs {MASTER} 1\n"
            )
            self.processes.start(port, str(config), "--sentinel")
        _until("replica in sync", self._replica_in_sync)
        for port in self.sentinel_ports:
            _until(f"sentinel {port} sees the set", lambda port=port: self._sees_all(port))
        return self

    def _replica_in_sync(self) -> bool:
        with _client(self.replica_port) as replica:
            return replica.info("replication").get("master_link_status") == "up"

    def _sees_all(self, port: int) -> bool:
        """Knows the replica and both other sentinels, so a failover can be voted."""
        with _client(port) as sentinel:
            master = sentinel.sentinel_master(MASTER)
            return bool(master["num-slaves"] >= 1 and master["num-other-sentinels"] >= 2)

    def master(self) -> int:
        """The port the sentinels name as master now."""
        with _client(self.sentinel_ports[0]) as sentinel:
            _, port = sentinel.sentinel_get_master_addr_by_name(MASTER)
        return int(port)

    def kill_master(self) -> int:
        port = self.master()
        self.processes.kill(port)
        return port

    def wait_promoted(self, old: int) -> int:
        """Block until every sentinel names a new master that accepts writes; its port."""

        def promoted() -> bool:
            for port in self.sentinel_ports:
                with _client(port) as sentinel:
                    _, named = sentinel.sentinel_get_master_addr_by_name(MASTER)
                if int(named) == old:
                    return False
            with _client(self.master()) as master:
                return master.info("replication")["role"] == "master"

        _until("promotion", promoted)
        return self.master()

    def wait_replicated(self) -> None:
        """Block until every write the master acknowledged has reached the replica."""
        with _client(self.master()) as master:
            assert master.execute_command("WAIT", 1, 5000) == 1

    def flush(self) -> None:
        with _client(self.master()) as master:
            master.flushall()
        self.wait_replicated()

    def stop(self) -> None:
        self.processes.stop()


class ClusterSet:
    """Three masters sharing the 16384 slots, no replicas."""

    def __init__(self, workdir: Path) -> None:
        self.processes = _Processes(workdir)
        self.ports = [free_port() for _ in range(3)]

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{port}" for port in self.ports)

    def start(self) -> ClusterSet:
        for port in self.ports:
            self.processes.start(
                port,
                "--cluster-enabled",
                "yes",
                "--cluster-port",
                str(free_port()),
                "--cluster-config-file",
                str(self.processes.workdir / f"nodes-{port}.conf"),
                "--cluster-node-timeout",
                "2000",
            )
        cli = shutil.which("redis-cli") or "redis-cli"
        nodes = [f"127.0.0.1:{port}" for port in self.ports]
        subprocess.run(
            [cli, "--cluster", "create", *nodes, "--cluster-yes"],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=STARTUP_TIMEOUT_S,
        )
        for port in self.ports:
            _until(f"cluster state on {port}", lambda port=port: self._ok(port))
        return self

    def _ok(self, port: int) -> bool:
        with _client(port) as node:
            info = node.execute_command("CLUSTER", "INFO").decode()
            return "cluster_state:ok" in info and "cluster_known_nodes:3" in info

    def owner(self, slot: int) -> int:
        """The port of the master serving `slot`."""
        with _client(self.ports[0]) as node:
            for start, end, master, *_ in node.execute_command("CLUSTER", "SLOTS"):
                if start <= slot <= end:
                    return int(master[1])
        raise LookupError(slot)

    def flush(self) -> None:
        for port in self.ports:
            with _client(port) as node:
                node.flushall()

    def stop(self) -> None:
        self.processes.stop()


def keyslot(key: str) -> int:
    """The slot Redis Cluster gives `key` (CRC16 of its hash tag, or of all of it)."""
    return int(key_slot(key.encode()))


@pytest.fixture(scope="session")
def redis_sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelSet]:
    """One Sentinel set-up for the session; tests that kill its master start their own."""
    setup = SentinelSet(tmp_path_factory.mktemp("sentinel"))
    try:
        yield setup.start()
    finally:
        setup.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterSet]:
    setup = ClusterSet(tmp_path_factory.mktemp("cluster"))
    try:
        yield setup.start()
    finally:
        setup.stop()
