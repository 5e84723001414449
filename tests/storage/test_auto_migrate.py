"""METER_AUTO_MIGRATE: on for the embedded PostgreSQL, off against a configured DATABASE_URL,
where a database that is behind is refused with a clear message instead of migrated."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from storage import db
from storage.errors import SchemaNotMigrated
from storage.migrate import migrate
from storage.settings import Settings, get_settings, reset_settings

ROOT = Path(__file__).resolve().parent.parent.parent


@pytest.fixture
def on_database(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The process's pool is closed before and after: `db.pool()` opens one on the URL set,
    and checks it afresh (the scratch database has the same URL in every test)."""
    monkeypatch.setattr(db, "_checked", set())
    db.close_pool()
    yield
    db.close_pool()
    monkeypatch.undo()
    reset_settings()


def use(monkeypatch: pytest.MonkeyPatch, url: str, auto: str | None) -> None:
    monkeypatch.setenv("DATABASE_URL", url)
    if auto is None:
        monkeypatch.delenv("METER_AUTO_MIGRATE", raising=False)
    else:
        monkeypatch.setenv("METER_AUTO_MIGRATE", auto)
    reset_settings()
    db.close_pool()


def test_the_default_follows_the_database() -> None:
    assert Settings(DATABASE_URL=None).auto_migrate is True  # embedded
    assert Settings(DATABASE_URL="postgresql://db/x").auto_migrate is False
    assert Settings(DATABASE_URL="postgresql://db/x", METER_AUTO_MIGRATE=True).auto_migrate
    assert not Settings(DATABASE_URL=None, METER_AUTO_MIGRATE=False).auto_migrate


def test_a_configured_database_that_is_behind_is_refused_not_migrated(
    scratch_database: str, on_database: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    use(monkeypatch, scratch_database, auto=None)
    with pytest.raises(SchemaNotMigrated) as refused:
        db.pool()
    assert refused.value.field == "database"
    assert "meter db migrate" in refused.value.reason
    assert "0001_initial" in refused.value.reason
    migrate(scratch_database)  # what `meter db migrate` does; then the pool opens
    with db.connection() as conn:
        assert conn.execute("SELECT count(*) FROM customers").fetchone() == (0,)


def test_auto_migrate_brings_the_schema_up_to_date_on_first_use(
    scratch_database: str, on_database: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    use(monkeypatch, scratch_database, auto="1")
    with db.connection() as conn:
        assert conn.execute("SELECT count(*) FROM customers").fetchone() == (0,)
    assert get_settings().auto_migrate


def test_the_cli_says_so_in_one_line(scratch_database: str) -> None:
    env = {**os.environ, "DATABASE_URL": scratch_database}
    env.pop("METER_AUTO_MIGRATE", None)
    result = subprocess.run(
        [sys.executable, "-c", "from cli.main import main; main()", "customers", "list"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: database: schema is not migrated"), result.stderr
    assert "Traceback" not in result.stderr
