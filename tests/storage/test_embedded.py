"""Embedded servers: started on demand under METER_DATA_DIR, reused, and persistent."""

from __future__ import annotations

import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis as redis_lib

from storage.embedded import (
    broker_url,
    database_url,
    redis_socket_path,
    redis_url,
    stop_embedded,
)
from storage.settings import reset_settings

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def own_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """No configured servers, a private data dir; whatever was started there is stopped after."""
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.delenv("BROKER_URL", raising=False)
    monkeypatch.setenv("METER_DATA_DIR", str(tmp_path / "meter"))
    reset_settings()
    try:
        yield tmp_path / "meter"
    finally:
        stop_embedded()
        monkeypatch.undo()
        reset_settings()


def _server_pid(url: str) -> int:
    client = redis_lib.Redis.from_url(url)
    try:
        return int(client.info("server")["process_id"])
    finally:
        client.close()


def test_embedded_redis_starts_once_and_is_reused(own_data_dir: Path) -> None:
    url = redis_url()
    assert url == f"unix://{own_data_dir / 'redis' / 'redis.sock'}"
    pid = _server_pid(url)
    client = redis_lib.Redis.from_url(url)
    client.set("counter", 41)
    client.close()

    assert redis_url() == url
    assert _server_pid(url) == pid
    again = redis_lib.Redis.from_url(redis_url())
    assert again.get("counter") == b"41"
    again.close()
    assert broker_url() == url  # no BROKER_URL: the broker is the Redis in effect


def test_embedded_redis_keeps_its_data_across_a_restart(own_data_dir: Path) -> None:
    url = redis_url()
    client = redis_lib.Redis.from_url(url)
    client.incrby("counter", 7)
    pid = _server_pid(url)
    client.close()

    assert stop_embedded() == ["redis"]
    assert not redis_socket_path(own_data_dir).exists() or not _answers(url)
    assert redis_url() == url
    assert _server_pid(url) != pid
    restarted = redis_lib.Redis.from_url(url)
    assert restarted.get("counter") == b"7"
    restarted.close()
    assert (own_data_dir / "redis" / "appendonly.aof").exists()


def test_the_embedded_redis_keeps_its_files_to_its_owner(own_data_dir: Path) -> None:
    """Its AOF holds the queued batches (customer ids, properties): never world-readable."""
    (own_data_dir / "redis").mkdir(parents=True, mode=0o755)
    older = own_data_dir / "redis" / "dump.rdb"
    older.write_bytes(b"")
    older.chmod(0o644)  # what an older version left
    client = redis_lib.Redis.from_url(redis_url())
    client.set("queued", "event")
    client.bgrewriteaof()
    client.close()
    stop_embedded()  # saves: every file it writes exists now
    redis_dir = own_data_dir / "redis"
    assert stat.S_IMODE(redis_dir.stat().st_mode) == 0o700
    entries = [redis_dir, *redis_dir.rglob("*")]
    assert any("appendonly" in entry.name for entry in entries)
    loose = {str(e): oct(e.stat().st_mode) for e in entries if e.stat().st_mode & 0o077}
    assert loose == {}


def test_concurrent_starts_share_one_redis(own_data_dir: Path) -> None:
    script = (
        "import redis; from storage.embedded import redis_url; "
        "print(redis.Redis.from_url(redis_url()).info('server')['process_id'])"
    )
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE, text=True
        )
        for _ in range(3)
    ]
    pids = {process.communicate(timeout=60)[0].strip() for process in processes}
    assert all(process.returncode == 0 for process in processes)
    assert pids == {str(_server_pid(redis_url()))}


def test_a_long_data_dir_puts_the_socket_under_tmp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data_dir = tmp_path / ("d" * 60) / ("e" * 60)
    socket_path = redis_socket_path(data_dir)
    assert socket_path == redis_socket_path(data_dir)  # stable for one data dir
    assert str(socket_path).startswith("/tmp/meterline-redis-")
    assert len(str(socket_path)) <= 100
    assert redis_socket_path(tmp_path / ("d" * 60) / ("f" * 60)) != socket_path

    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.setenv("METER_DATA_DIR", str(data_dir))
    reset_settings()
    try:
        assert redis_url() == f"unix://{socket_path}"
        assert _answers(redis_url())
        assert (data_dir / "redis" / "redis.conf").exists()  # data stays under the data dir
    finally:
        stop_embedded()
        reset_settings()
        shutil.rmtree(socket_path.parent, ignore_errors=True)


def test_embedded_postgres_gives_a_working_url_and_reuses_the_server(own_data_dir: Path) -> None:
    url = database_url()
    with psycopg.connect(url) as conn:
        conn.execute("CREATE TABLE kept (n int)")
        conn.execute("INSERT INTO kept VALUES (42)")
        postmaster_pid_file = own_data_dir / "pg" / "postmaster.pid"
        postmaster = postmaster_pid_file.read_text().split()[0]
    # Another process reuses the running server: same URL, same postmaster, same data.
    script = (
        "import psycopg; from storage.embedded import database_url; "
        "c = psycopg.connect(database_url()); "
        "print(database_url()); print(c.execute('SELECT n FROM kept').fetchone()[0])"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [url, "42"]
    assert postmaster_pid_file.read_text().split()[0] == postmaster

    assert stop_embedded() == ["postgresql"]
    assert not postmaster_pid_file.exists()


def test_configured_urls_win_over_embedded_servers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://db.example/meter")
    monkeypatch.setenv("REDIS_URL", "redis://cache.example:6379/2")
    monkeypatch.setenv("BROKER_URL", "amqp://mq.example")
    reset_settings()
    try:
        assert database_url() == "postgresql://db.example/meter"
        assert redis_url() == "redis://cache.example:6379/2"
        assert broker_url() == "amqp://mq.example"
    finally:
        monkeypatch.undo()
        reset_settings()


def _answers(url: str) -> bool:
    client = redis_lib.Redis.from_url(url, socket_connect_timeout=1)
    try:
        return bool(client.ping())
    except redis_lib.ConnectionError:
        return False
    finally:
        client.close()
