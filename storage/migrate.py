"""Schema migrations with yoyo: `storage/migrations/NNNN_name.sql`, applied in order.

yoyo records what it applied in its own tables and holds a lock row while applying, so several
processes that start at once (workers, scheduler, CLI) apply each migration exactly once.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import psycopg
from psycopg.conninfo import conninfo_to_dict
from yoyo import get_backend, read_migrations  # type: ignore[import-untyped]

logger = logging.getLogger(f"meterline.{__name__}")

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
# How long a process waits for another one that is applying migrations.
_LOCK_TIMEOUT_S = 120


def migrate(url: str | None = None) -> list[str]:
    """Apply pending migrations to `url` (default: the database in effect); return their ids."""
    if url is None:
        from storage.embedded import database_url

        url = database_url()
    backend = get_backend(yoyo_url(url))
    try:
        migrations = read_migrations(str(MIGRATIONS_DIR))
        with backend.lock(timeout=_LOCK_TIMEOUT_S):
            pending = backend.to_apply(migrations)
            backend.apply_migrations(pending)
        applied = [migration.id for migration in pending]
    finally:
        backend.connection.close()
    if applied:
        logger.info("applied migrations: %s", ", ".join(applied))
    return applied


def pending(conn: psycopg.Connection[Any]) -> list[str]:
    """The migrations of this release that the database `conn` is on has not applied."""
    known = sorted(path.stem for path in MIGRATIONS_DIR.glob("*.sql"))
    row = conn.execute("SELECT to_regclass('_yoyo_migration') IS NOT NULL").fetchone()
    applied: set[str] = set()
    if row is not None and row[0]:
        applied = {name for (name,) in conn.execute("SELECT migration_id FROM _yoyo_migration")}
    return [name for name in known if name not in applied]


def yoyo_url(url: str) -> str:
    """`url` (a libpq URL or key=value string) as a yoyo URL for its psycopg 3 backend.

    Every connection parameter goes in the query string, which yoyo passes to
    `psycopg.connect` as keywords: this keeps unix-socket hosts (the embedded server's
    `?host=/path`) and options that a URL cannot spell in its netloc.
    """
    params = {key: str(value) for key, value in conninfo_to_dict(url).items()}
    return f"postgresql+psycopg:///?{urlencode(params)}"
