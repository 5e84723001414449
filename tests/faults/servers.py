"""Servers a fault test may stop: a redis-server on a spare port, a PostgreSQL cluster in a
temporary directory. The machine's own servers are never stopped."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import time
from pathlib import Path

import psycopg
import redis

from tests.faults.processes import free_port

PG_BIN = Path(os.environ.get("METER_TEST_PG_BIN", "/usr/local/bin"))


class RedisServer:
    """`redis-server` on a spare port with its data in `directory` (AOF on unless told)."""

    def __init__(self, directory: Path, *, appendonly: bool = True, bus: bool = False) -> None:
        self.directory = directory
        self.port = free_port(also_free=10_000 if bus else None)
        self.appendonly = appendonly
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, extra: tuple[str, ...] = ()) -> None:
        executable = shutil.which("redis-server")
        assert executable is not None, "redis-server not found"
        args = [executable, "--port", str(self.port), "--bind", "127.0.0.1", "--dir",
                str(self.directory), "--save", "", "--appendfsync", "everysec",
                "--appendonly", "yes" if self.appendonly else "no", *extra]  # fmt: skip
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL)
        client = redis.Redis.from_url(self.url)
        answering(client)

    def stop(self) -> None:
        """SIGTERM: Redis writes out its AOF and exits."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)
        self.process = None


class PostgresCluster:
    """A PostgreSQL cluster in `directory` (initdb, pg_ctl), on a spare port, trust auth.

    PostgreSQL refuses to run as root: as root (CI), the cluster runs as the `postgres` user."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.data = directory / "data"
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._user = "postgres" if os.geteuid() == 0 else None

    def _run(self, *args: str) -> None:
        subprocess.run(args, check=True, capture_output=True, user=self._user, timeout=120)

    def init(self) -> None:
        if self._user is not None:
            entry = pwd.getpwnam(self._user)
            os.chown(self.directory, entry.pw_uid, entry.pw_gid)
        self._run(str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres",
                  "--auth=trust", "--no-sync")  # fmt: skip

    def start(self) -> None:
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.directory} -c fsync=off"
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-o", options,
                  "-l", str(self.directory / "log"), "-w", "start")  # fmt: skip
        with psycopg.connect(self.url, connect_timeout=10) as conn:
            conn.execute("SELECT 1")

    def stop(self) -> None:
        """Fast shutdown: every session is ended, open transactions roll back."""
        if (self.data / "postmaster.pid").exists():
            self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")


class RedisClusterServers:
    """Three `redis-server --cluster-enabled yes` on spare ports joined by
    `redis-cli --cluster create` into a 3-master cluster (no replicas)."""

    def __init__(self, directory: Path) -> None:
        self.nodes: list[RedisServer] = []
        for index in range(3):
            node_dir = directory / f"node-{index}"
            node_dir.mkdir()
            self.nodes.append(RedisServer(node_dir, appendonly=False, bus=True))
        self.url = self.nodes[0].url

    def start(self, extra: tuple[str, ...] = ("--cluster-enabled", "yes")) -> None:
        for node in self.nodes:
            node.start(extra)
        cli = shutil.which("redis-cli")
        assert cli is not None, "redis-cli not found"
        addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
        subprocess.run([cli, "--cluster", "create", *addresses, "--cluster-replicas", "0",
                        "--cluster-yes"], check=True, capture_output=True, timeout=60)  # fmt: skip
        for node in self.nodes:
            client = redis.Redis.from_url(node.url)
            deadline = time.monotonic() + 30
            while client.cluster("info").get("cluster_state") != "ok":
                assert time.monotonic() < deadline, "the cluster did not become ok"
                time.sleep(0.1)
            client.close()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def answering(client: redis.Redis, timeout: float = 20.0) -> None:
    """Wait until a just-started redis-server answers PING (then close the client)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    client.close()
