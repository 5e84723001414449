"""The ledger table: partitioned by month, deduplicating by key, partitions created on demand."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from decimal import Decimal

import psycopg
import pytest

from storage import db as storage_db
from tests.conftest import SessionServers

# A month no other test uses: the partition tests drop and re-create it.
FAR_MONTH = datetime(2019, 5, 17, 12, 0, tzinfo=UTC)
FAR_PARTITION = "usage_events_y2019m05"


def _month_offset(months: int) -> datetime:
    now = datetime.now(UTC)
    index = now.year * 12 + now.month - 1 + months
    return datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC)


def _partitions(conn: psycopg.Connection) -> set[str]:
    rows = conn.execute(
        "SELECT inhrelid::regclass::text FROM pg_inherits"
        " WHERE inhparent = 'usage_events'::regclass"
    ).fetchall()
    return {name for (name,) in rows}


def _insert_event(conn: psycopg.Connection, event_id: str, at: datetime) -> None:
    conn.execute(
        "INSERT INTO usage_events (customer_id, event_id, metric, quantity, timestamp)"
        " VALUES ('cus_1', %s, 'api_calls', %s, %s)",
        (event_id, Decimal("1.5"), at),
    )


def _partition_of(conn: psycopg.Connection, event_id: str) -> str:
    row = conn.execute(
        "SELECT tableoid::regclass::text FROM usage_events WHERE event_id = %s", (event_id,)
    ).fetchone()
    assert row is not None
    return str(row[0])


@pytest.fixture
def no_far_partition(db: psycopg.Connection) -> None:
    db.execute(f"DROP TABLE IF EXISTS {FAR_PARTITION}")


def test_ledger_is_range_partitioned_on_timestamp(db: psycopg.Connection) -> None:
    row = db.execute(
        "SELECT p.partstrat, a.attname FROM pg_partitioned_table p"
        " JOIN pg_attribute a ON a.attrelid = p.partrelid AND a.attnum = p.partattrs[0]"
        " WHERE p.partrelid = 'usage_events'::regclass"
    ).fetchone()
    assert row == ("r", "timestamp")
    expected = {
        f"usage_events_y{month:%Y}m{month:%m}" for month in map(_month_offset, range(-2, 3))
    }
    assert expected | {"usage_events_default"} <= _partitions(db)


def test_events_land_in_their_month_partition(db: psycopg.Connection) -> None:
    now = datetime.now(UTC)
    _insert_event(db, "e1", now)
    assert _partition_of(db, "e1") == f"usage_events_y{now:%Y}m{now:%m}"


def test_primary_key_rejects_a_duplicate_event(db: psycopg.Connection) -> None:
    at = datetime.now(UTC)
    _insert_event(db, "dup", at)
    with pytest.raises(psycopg.errors.UniqueViolation):
        _insert_event(db, "dup", at)
    count = db.execute("SELECT count(*) FROM usage_events WHERE event_id = 'dup'").fetchone()
    assert count == (1,)


def test_event_ids_catch_a_resend_with_another_timestamp(db: psycopg.Connection) -> None:
    db.execute(
        "INSERT INTO event_ids (customer_id, event_id, timestamp) VALUES ('cus_1', 'e', now())"
    )
    with pytest.raises(psycopg.errors.UniqueViolation):
        db.execute(
            "INSERT INTO event_ids (customer_id, event_id, timestamp)"
            " VALUES ('cus_1', 'e', now() - interval '3 days')"
        )


def test_ensure_partitions_creates_the_month_and_moves_waiting_rows(
    db: psycopg.Connection, no_far_partition: None
) -> None:
    _insert_event(db, "early", FAR_MONTH)
    assert _partition_of(db, "early") == "usage_events_default"

    with storage_db.connection() as conn:
        created = storage_db.ensure_ledger_partitions(conn, FAR_MONTH, FAR_MONTH)
    assert created == [FAR_PARTITION]
    assert _partition_of(db, "early") == FAR_PARTITION
    with storage_db.connection() as conn:
        assert storage_db.ensure_ledger_partitions(conn, FAR_MONTH, FAR_MONTH) == []
    # The partition covers exactly its UTC month.
    bounds = db.execute(
        "SELECT pg_get_expr(relpartbound, oid) FROM pg_class WHERE relname = %s",
        (FAR_PARTITION,),
    ).fetchone()
    assert bounds is not None
    assert "2019-05-01 00:00:00+00" in bounds[0] and "2019-06-01 00:00:00+00" in bounds[0]


def test_ensure_partitions_covers_every_month_of_the_range(db: psycopg.Connection) -> None:
    for name in ("usage_events_y2018m11", "usage_events_y2018m12", "usage_events_y2019m01"):
        db.execute(f"DROP TABLE IF EXISTS {name}")
    with storage_db.connection() as conn:
        created = storage_db.ensure_ledger_partitions(
            conn, datetime(2018, 11, 30, tzinfo=UTC), datetime(2019, 1, 1, tzinfo=UTC)
        )
    assert created == ["usage_events_y2018m11", "usage_events_y2018m12", "usage_events_y2019m01"]


def test_concurrent_creators_of_one_partition_do_not_collide(
    test_servers: SessionServers, db: psycopg.Connection, no_far_partition: None
) -> None:
    results: dict[str, list[str]] = {}
    with psycopg.connect(test_servers.database_url) as first:
        results["first"] = storage_db.ensure_ledger_partitions(first, FAR_MONTH, FAR_MONTH)

        def second() -> None:
            with psycopg.connect(test_servers.database_url) as conn:
                results["second"] = storage_db.ensure_ledger_partitions(conn, FAR_MONTH, FAR_MONTH)

        thread = threading.Thread(target=second)
        thread.start()
        thread.join(timeout=0.5)
        assert thread.is_alive(), "the second creator must wait for the first to commit"
        first.commit()
    thread.join(timeout=10)
    assert results == {"first": [FAR_PARTITION], "second": []}
