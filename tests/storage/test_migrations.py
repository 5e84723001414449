"""The schema: migrations apply once (also under concurrent starts) and create every table."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import psycopg
import psycopg.types.json

from storage.migrate import MIGRATIONS_DIR, migrate, yoyo_url
from tests.conftest import SessionServers, truncate_application_tables

REPO = Path(__file__).resolve().parents[2]

APPLICATION_TABLES = {
    "plans",
    "customers",
    "subscriptions",
    "usage_events",
    "event_ids",
    "usage_periods",
    "usage_rollups",
    "usage_rollup_uniques",
    "usage_daily",
    "ingest_batches",
    "ingest_totals",
    "rejected_events",
    "invoices",
    "invoice_lines",
    "invoice_numbers",
    "invoice_jobs",
    "alerts",
    "alert_overrides",
    "outbox",
}


# Every migration file, in the order they apply (later work adds files after 0001_initial).
ALL_MIGRATIONS = sorted(
    path.stem for path in MIGRATIONS_DIR.glob("*.sql") if not path.name.endswith(".rollback.sql")
)


def _tables(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition"
        ).fetchall()
    return {name for (name,) in rows}


def test_migrations_apply_once_then_nothing(scratch_database: str) -> None:
    assert ALL_MIGRATIONS[0] == "0001_initial"
    assert migrate(scratch_database) == ALL_MIGRATIONS
    assert migrate(scratch_database) == []
    assert _tables(scratch_database) >= APPLICATION_TABLES


def test_the_session_database_is_migrated(test_servers: SessionServers) -> None:
    assert migrate(test_servers.database_url) == []
    assert _tables(test_servers.database_url) >= APPLICATION_TABLES


def test_concurrent_starts_apply_each_migration_once(scratch_database: str) -> None:
    script = "import sys; from storage.migrate import migrate; print(migrate(sys.argv[1]))"
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", script, scratch_database],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    outputs = []
    for process in processes:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
        outputs.append(out.strip())
    assert sorted(outputs) == sorted([str(ALL_MIGRATIONS), "[]", "[]"])
    assert _tables(scratch_database) >= APPLICATION_TABLES


def test_yoyo_url_keeps_unix_socket_hosts_and_credentials() -> None:
    url = yoyo_url("postgresql://postgres:s3cret@/meter?host=/tmp/pg")
    assert url.startswith("postgresql+psycopg:///?")
    assert "host=%2Ftmp%2Fpg" in url
    assert "dbname=meter" in url
    assert "password=s3cret" in url
    assert "dbname=x" in yoyo_url("host=localhost port=5433 dbname=x user=u")


def test_clean_state_empties_tables_and_restarts_sequences(
    test_servers: SessionServers, db: psycopg.Connection
) -> None:
    db.execute("INSERT INTO outbox (topic, payload) VALUES ('t', '{}'), ('t', '{}')")
    db.execute(
        "INSERT INTO usage_events (customer_id, event_id, metric, quantity, timestamp)"
        " VALUES ('c', 'e', 'm', 1, now()), ('c', 'e', 'm', 1, '2001-01-01')"
    )
    truncate_application_tables(test_servers.database_url)
    assert db.execute("SELECT count(*) FROM outbox").fetchone() == (0,)
    assert db.execute("SELECT count(*) FROM usage_events").fetchone() == (0,)
    row = db.execute("INSERT INTO outbox (topic, payload) VALUES ('t', '{}') RETURNING id")
    assert row.fetchone() == (1,)
    assert migrate(test_servers.database_url) == []  # yoyo's own tables were left alone


def test_failed_batches_kept_as_jsonb_survive_the_move_to_text(scratch_database: str) -> None:
    """0006 turns failed_batches.payload into text (jsonb cannot hold NUL or lone surrogates);
    rows kept before it read back as the same JSON."""
    from yoyo import get_backend, read_migrations  # type: ignore[import-untyped]

    before = [m for m in ALL_MIGRATIONS if m < "0006"]
    backend = get_backend(yoyo_url(scratch_database))
    try:
        migrations = read_migrations(str(MIGRATIONS_DIR)).filter(lambda m: m.id in before)
        with backend.lock():
            backend.apply_migrations(backend.to_apply(migrations))
    finally:
        backend.connection.close()
    kept = {"batch_id": "b1", "events": [{"note": "é ✓", "n": 1.5, "tab": "a\tb"}]}
    with psycopg.connect(scratch_database, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO failed_batches (batch_id, payload, error) VALUES ('b1', %s, 'boom')",
            (psycopg.types.json.Jsonb(kept),),
        )
    assert "0006_failed_batches_text" in migrate(scratch_database)
    with psycopg.connect(scratch_database) as conn:
        (payload,) = conn.execute("SELECT payload FROM failed_batches").fetchone() or (None,)
    assert isinstance(payload, str) and json.loads(payload) == kept
