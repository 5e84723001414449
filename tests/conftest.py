"""Fixtures shared by the whole suite: real PostgreSQL and real Redis, clean for every test.

The session runs against DATABASE_URL / REDIS_URL when they are set, else against embedded
servers started in a temporary METER_DATA_DIR. It never touches the configured database itself:
it creates `meterline_test_<pid>` next to it, and claims a Redis database index of its own, so
several test sessions can share one server. Tests that take `db` or `redis` (or `clean_state`)
start from empty tables and an empty Redis database, whatever ran before them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
import redis as redis_lib
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from psycopg import sql
from psycopg.conninfo import make_conninfo

from storage import db as storage_db
from storage.embedded import database_url, redis_url, stop_embedded
from storage.migrate import migrate
from storage.redis_client import get_redis, reset_redis
from storage.settings import Settings, get_settings, reset_settings

# The hard-days job: `date_sensitive` tests also run with the clock pinned to each hard day.
pytest_plugins = ["tests.hard_days"]

# Hypothesis: a fixed budget per property (HYPOTHESIS_PROFILE=thorough for far more examples);
# no deadlines or slowness checks, which a cold or shared machine would trip on.
for _name, _examples in (("meterline", 150), ("thorough", 3000)):
    hypothesis_settings.register_profile(
        _name,
        max_examples=_examples,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "meterline"))

# Redis database indexes a session may claim on a shared server (0 is left to development).
_REDIS_DB_CHOICES = range(15, 0, -1)
_REDIS_CLAIM_TTL_S = 6 * 3600
_TRUNCATE_LOCK_TIMEOUT = "10s"


@dataclass(frozen=True)
class SessionServers:
    """Where this session's data lives."""

    database_url: str
    redis_url: str
    data_dir: str


def pytest_configure(config: pytest.Config) -> None:
    """Before any test module is imported: embedded servers, if any are needed, live in a data
    dir of this session's own, never in the working copy's `.meter/`. (Importing a module
    starts nothing: actors wait on a placeholder broker, and the first test that sends
    resolves the session's broker through `tasks.broker.get_broker`.)"""
    os.environ["METER_DATA_DIR"] = tempfile.mkdtemp(prefix="meterline-test-")
    # `meter worker` started by a test serves no metrics unless the test gives it a port of its
    # own: sessions of several engineers share this machine, and 9191 is one port.
    os.environ.setdefault("METER_METRICS_PORT", "0")
    reset_settings()


@pytest.fixture(scope="session")
def test_servers() -> Iterator[SessionServers]:
    """Create the session's database and Redis database, migrate, and point the env at them."""
    env = pytest.MonkeyPatch()
    data_dir = os.environ["METER_DATA_DIR"]  # set by pytest_configure
    _reset_clients()

    server_url = database_url()  # DATABASE_URL, or the embedded server in data_dir
    test_db = f"meterline_test_{os.getpid()}"
    _recreate_database(server_url, test_db)
    test_url = _with_dbname(server_url, test_db)

    claim = _claim_redis_db(redis_url())
    env.setenv("DATABASE_URL", test_url)
    env.setenv("REDIS_URL", claim.url)
    _reset_clients()
    migrate(test_url)
    try:
        yield SessionServers(database_url=test_url, redis_url=claim.url, data_dir=str(data_dir))
    finally:
        with contextlib.suppress(redis_lib.RedisError):  # a test may have stopped Redis
            get_redis().flushdb()
        _reset_clients()
        claim.release()
        _drop_database(server_url, test_db)
        stop_embedded()  # stops only what runs under the session's temporary data dir
        shutil.rmtree(data_dir, ignore_errors=True)
        env.undo()
        reset_settings()


@pytest.fixture
def scratch_database(test_servers: SessionServers) -> Iterator[str]:
    """A brand-new, empty (unmigrated) database on the session's server; dropped afterwards."""
    name = f"meterline_scratch_{os.getpid()}"
    _recreate_database(test_servers.database_url, name)
    try:
        yield _with_dbname(test_servers.database_url, name)
    finally:
        _drop_database(test_servers.database_url, name)


@pytest.fixture
def clean_state(test_servers: SessionServers) -> None:
    """Empty every application table and the session's Redis database before the test."""
    truncate_application_tables(test_servers.database_url)
    get_redis().flushdb()
    storage_db.clear_caches()


@pytest.fixture(name="db")
def db_fixture(clean_state: None, test_servers: SessionServers) -> Iterator[psycopg.Connection]:
    """An autocommit connection to the (clean) test database, for arranging and inspecting.

    Autocommit so that it never holds locks or an old snapshot while the code under test runs;
    in UTC like the pool's sessions.
    """
    with psycopg.connect(
        test_servers.database_url, autocommit=True, options="-c TimeZone=UTC"
    ) as conn:
        yield conn


@pytest.fixture(name="redis")
def redis_fixture(clean_state: None) -> redis_lib.Redis:
    """The application's Redis client, on the session's (flushed) Redis database."""
    return get_redis()


@pytest.fixture(name="settings")
def settings_fixture(test_servers: SessionServers) -> Settings:
    """The settings in effect for the session (test database, test Redis, temporary data dir)."""
    return get_settings()


# --- helpers ------------------------------------------------------------------------------


def _reset_clients() -> None:
    """Re-read the environment and drop clients bound to the previous URLs."""
    reset_settings()
    storage_db.close_pool()
    reset_redis()


def _with_dbname(url: str, dbname: str) -> str:
    """`url` with its database replaced; URLs stay URLs (keeping `?host=/socket/dir`)."""
    parts = urlsplit(url)
    if parts.scheme in ("postgres", "postgresql"):
        return urlunsplit(parts._replace(path=f"/{dbname}"))
    return make_conninfo(url, dbname=dbname)


def _maintenance_connection(server_url: str) -> psycopg.Connection:
    """An autocommit session in the server's `postgres` database (else in the URL's own)."""
    try:
        return psycopg.connect(_with_dbname(server_url, "postgres"), autocommit=True)
    except psycopg.OperationalError:
        return psycopg.connect(server_url, autocommit=True)


def _recreate_database(server_url: str, dbname: str) -> None:
    with _maintenance_connection(server_url) as conn:
        name = sql.Identifier(dbname)
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(name))


def _drop_database(server_url: str, dbname: str) -> None:
    with _maintenance_connection(server_url) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname))
        )


def truncate_application_tables(url: str) -> None:
    """Empty every table of the schema except yoyo's bookkeeping, and restart its sequences.

    Only tables that hold rows are truncated (TRUNCATE rewrites every table it names, which
    costs far more than looking); partitions are emptied through their parent.
    """
    with psycopg.connect(url, autocommit=True) as conn:
        tables = [
            name
            for (name,) in conn.execute(
                "SELECT c.relname FROM pg_class c"
                " JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p')"
                " AND NOT c.relispartition"
                " AND c.relname NOT LIKE '\\_yoyo%' AND c.relname <> 'yoyo_lock'"
            )
        ]
        if not tables:
            return
        has_rows = sql.SQL(" UNION ALL ").join(
            sql.SQL("SELECT {} WHERE EXISTS (SELECT FROM {})").format(
                sql.Literal(name), sql.Identifier(name)
            )
            for name in tables
        )
        dirty = [name for (name,) in conn.execute(has_rows)]
        # Fail loudly instead of hanging if a previous test left a transaction open.
        conn.execute(sql.SQL("SET lock_timeout = {}").format(sql.Literal(_TRUNCATE_LOCK_TIMEOUT)))
        if dirty:
            conn.execute(
                sql.SQL("TRUNCATE {} CASCADE").format(
                    sql.SQL(", ").join(sql.Identifier(name) for name in dirty)
                )
            )
        # Sequences advance even when rows are rolled back: restart every one that was used.
        conn.execute(
            "SELECT setval(format('%I.%I', schemaname, sequencename)::regclass,"
            " start_value, false)"
            " FROM pg_sequences WHERE schemaname = current_schema() AND last_value IS NOT NULL"
        )


@dataclass(frozen=True)
class _RedisClaim:
    url: str
    claim_url: str | None = None
    claim_key: str | None = None

    def release(self) -> None:
        if self.claim_url is None or self.claim_key is None:
            return
        client = redis_lib.Redis.from_url(self.claim_url)
        try:
            client.delete(self.claim_key)
        finally:
            client.close()


def _claim_redis_db(base_url: str) -> _RedisClaim:
    """A Redis database for this session alone.

    A unix socket is the session's own embedded server: its database is used as it is. On a
    TCP server other sessions (other engineers, CI) may be running: claim a free index 15..1
    with a key in database 0 that names the owner and expires if the session dies.
    """
    if urlsplit(base_url).scheme == "unix":
        return _RedisClaim(url=base_url)
    claim_url = _with_redis_db(base_url, 0)
    owner = f"{socket.gethostname()}:{os.getpid()}"
    client = redis_lib.Redis.from_url(claim_url)
    try:
        for index in _REDIS_DB_CHOICES:
            key = f"meterline:test-session-db:{index}"
            if client.set(key, owner, nx=True, ex=_REDIS_CLAIM_TTL_S):
                url = _with_redis_db(base_url, index)
                session_db = redis_lib.Redis.from_url(url)
                try:
                    session_db.flushdb()  # whatever a crashed session left behind
                except redis_lib.ResponseError:  # the server has fewer databases
                    client.delete(key)
                    continue
                finally:
                    session_db.close()
                return _RedisClaim(url=url, claim_url=claim_url, claim_key=key)
    finally:
        client.close()
    raise RuntimeError(f"no free Redis database among {list(_REDIS_DB_CHOICES)} on {base_url}")


def _with_redis_db(url: str, index: int) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{index}"))
