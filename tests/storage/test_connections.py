"""The connection pool and the Redis client: transactions, reset hooks, fork safety."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
import redis as redis_lib

from storage import db as storage_db
from storage.redis_client import get_redis, reset_redis
from tests.conftest import SessionServers

REPO = Path(__file__).resolve().parents[2]

# Parent opens the pool, forks; the child uses "its" pool, closes it and exits normally (running
# garbage collection and atexit). The parent's pooled session must survive the child.
FORK_SCRIPT = """
import json, os, sys
from storage import db
from storage.redis_client import get_redis

with db.connection() as conn:
    parent_backend = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
parent_pool, parent_redis = db.pool(), get_redis()
read_end, write_end = os.pipe()
child = os.fork()
if child == 0:
    os.close(read_end)
    with db.connection() as conn:
        backend = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
    report = {
        "backend": backend,
        "new_pool": db.pool() is not parent_pool,
        "new_redis": get_redis() is not parent_redis,
        "redis_ping": get_redis().ping(),
    }
    os.write(write_end, json.dumps(report).encode())
    os.close(write_end)
    db.close_pool()  # what a worker does on shutdown: must close the child's pool only
    sys.exit(0)
os.close(write_end)
_, status = os.waitpid(child, 0)
report = json.loads(os.read(read_end, 65536))
report["child_status"] = status
report["parent_backend"] = parent_backend
with db.connection() as conn:
    report["parent_backend_after"] = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
print(json.dumps(report))
"""


def test_pool_is_created_once_and_reopened_after_close(clean_state: None) -> None:
    first = storage_db.pool()
    assert storage_db.pool() is first
    storage_db.close_pool()
    second = storage_db.pool()
    assert second is not first
    with storage_db.connection() as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_pooled_sessions_use_utc(clean_state: None) -> None:
    with storage_db.connection() as conn:
        assert conn.execute("SHOW TimeZone").fetchone() == ("UTC",)


def test_connection_commits_on_success_and_rolls_back_on_error(db: psycopg.Connection) -> None:
    with storage_db.connection() as conn:
        conn.execute("INSERT INTO invoice_numbers (name, last_number) VALUES ('kept', 1)")
    with pytest.raises(RuntimeError), storage_db.connection() as conn:
        conn.execute("INSERT INTO invoice_numbers (name, last_number) VALUES ('lost', 1)")
        raise RuntimeError("boom")
    assert db.execute("SELECT name FROM invoice_numbers").fetchall() == [("kept",)]


def test_transaction_on_a_callers_connection_is_a_savepoint(db: psycopg.Connection) -> None:
    with storage_db.connection() as conn:
        conn.execute("INSERT INTO invoice_numbers (name) VALUES ('outer')")
        with pytest.raises(RuntimeError), storage_db.transaction(conn) as inner:
            inner.execute("INSERT INTO invoice_numbers (name) VALUES ('inner')")
            raise RuntimeError("boom")
        with storage_db.transaction(conn) as inner:
            assert inner is conn
            inner.execute("INSERT INTO invoice_numbers (name) VALUES ('inner2')")
        # Nothing is visible to others until the caller's transaction commits.
        assert db.execute("SELECT count(*) FROM invoice_numbers").fetchone() == (0,)
    rows = db.execute("SELECT name FROM invoice_numbers ORDER BY name").fetchall()
    assert rows == [("inner2",), ("outer",)]


def test_transaction_on_an_autocommit_connection_is_its_own(
    test_servers: SessionServers, db: psycopg.Connection
) -> None:
    with psycopg.connect(test_servers.database_url, autocommit=True) as conn:
        with pytest.raises(RuntimeError), storage_db.transaction(conn) as tx:
            tx.execute("INSERT INTO invoice_numbers (name) VALUES ('lost')")
            raise RuntimeError("boom")
        with storage_db.transaction(conn) as tx:
            tx.execute("INSERT INTO invoice_numbers (name) VALUES ('kept')")
    assert db.execute("SELECT name FROM invoice_numbers").fetchall() == [("kept",)]


def test_registered_caches_are_cleared(clean_state: None) -> None:
    cache = {"stale": 1}
    storage_db.register_cache(cache.clear)
    storage_db.register_cache(cache.clear)  # registering twice is harmless
    storage_db.clear_caches()
    assert cache == {}


def test_redis_client_is_shared_and_returns_bytes(redis: redis_lib.Redis) -> None:
    assert get_redis() is redis
    redis.set("k", "v")
    assert redis.get("k") == b"v"
    reset_redis()
    assert get_redis() is not redis
    assert get_redis().get("k") == b"v"


def test_a_forked_child_gets_its_own_pool_and_leaves_the_parents_alone(
    test_servers: SessionServers, clean_state: None
) -> None:
    result = subprocess.run(
        [sys.executable, "-c", FORK_SCRIPT],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["child_status"] == 0
    assert report["new_pool"] and report["new_redis"] and report["redis_ping"]
    assert report["backend"] != report["parent_backend"]
    # The parent's session was not closed by the child: the same backend serves it still.
    assert report["parent_backend_after"] == report["parent_backend"]
