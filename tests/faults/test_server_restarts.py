"""The servers go away mid-ingest: Redis restarted (the broker and the counters; with AOF the
queued backlog survives), PostgreSQL stopped for 20 s (the workers retry). Nothing accepted is
lost, nothing is counted twice."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from storage import db as storage_db
from storage.migrate import migrate
from storage.redis_client import reset_redis
from storage.settings import reset_settings
from tasks.broker import make_broker
from tests.faults.checks import all_ingested, assert_exactly_once, close_period, invoiced, record
from tests.faults.processes import scalar, wait_for, worker, worker_env
from tests.faults.servers import PostgresCluster, RedisServer
from tests.metering.helpers import in_previous_period, setup_customer

EVENTS = 30_000
PG_OUTAGE_S = 20


def _use(monkeypatch: pytest.MonkeyPatch, name: str, url: str) -> None:
    """Point this process (and the workers it starts) at `url` for the rest of the test."""
    monkeypatch.setenv(name, url)
    _reset_clients()


def _reset_clients() -> None:
    """Re-read the settings; drop the pool, caches and Redis client made from the old ones."""
    reset_settings()
    storage_db.close_pool()
    storage_db.clear_caches()
    reset_redis()


@pytest.fixture
def own_redis(
    clean_state: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    monkeypatch.setenv("BROKER_URL", server.url)  # the broker and the counters
    _use(monkeypatch, "REDIS_URL", server.url)
    try:
        yield server
    finally:
        server.stop()
        monkeypatch.undo()
        _reset_clients()


@pytest.fixture
def own_postgres(clean_state: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[PostgresCluster]:
    directory = Path(tempfile.mkdtemp(prefix="meterline-pg-"))  # the postgres user must reach it
    cluster = PostgresCluster(directory)
    try:
        cluster.init()
        cluster.start()
        migrate(cluster.url)
        _use(monkeypatch, "DATABASE_URL", cluster.url)
        yield cluster
    finally:
        storage_db.close_pool()
        cluster.stop()
        shutil.rmtree(directory, ignore_errors=True)
        monkeypatch.undo()
        _reset_clients()


def test_redis_restarted_mid_ingest_keeps_the_backlog_and_the_counters(
    own_redis: RedisServer,
) -> None:
    setup_customer()
    at = in_previous_period()
    broker = make_broker()
    record(broker, EVENTS, at=at, batch_size=500)  # 60 messages in the broker's Redis
    env = worker_env(REDIS_URL=own_redis.url)
    with worker("workers.app", processes=1, threads=2, queues=("ingest", "billing"), env=env):
        wait_for(lambda: scalar("SELECT count(*) FROM usage_events") > 0, timeout=60)
        own_redis.stop()  # mid-ingest: most of the backlog is still queued
        assert scalar("SELECT count(*) FROM usage_events") < EVENTS
        own_redis.start()  # from its AOF
        wait_for(lambda: all_ingested(EVENTS), timeout=60)
        close_period(make_broker(), at)
        invoice = invoiced(at)
    assert_exactly_once(EVENTS, at, invoice)


def test_postgresql_stopped_20s_mid_ingest_loses_nothing(own_postgres: PostgresCluster) -> None:
    setup_customer()
    at = in_previous_period()
    broker = make_broker()
    record(broker, EVENTS, at=at, batch_size=500)
    env = worker_env(DATABASE_URL=own_postgres.url)
    with worker("workers.app", processes=1, threads=2, queues=("ingest", "billing"), env=env):
        wait_for(lambda: scalar("SELECT count(*) FROM usage_events") > 0, timeout=60)
        storage_db.close_pool()  # this process's sessions end with the server
        own_postgres.stop()
        time.sleep(PG_OUTAGE_S)  # the workers fail their batches and retry with backoff
        own_postgres.start()
        assert scalar("SELECT count(*) FROM usage_events") < EVENTS  # the outage was mid-ingest
        wait_for(lambda: all_ingested(EVENTS), timeout=60)
        close_period(broker, at)
        invoice = invoiced(at)
    assert_exactly_once(EVENTS, at, invoice)
