"""`batch_write.round_trip`: a pipeline holding a statement of megabytes (an ingest batch's
events) is sent and answered over a Unix socket too, where psycopg's `Pipeline.sync()` waits
forever (found by `meter demo` on the embedded PostgreSQL, which only listens on a socket)."""

from __future__ import annotations

import json
import threading
from typing import Any

import psycopg
import pytest

from storage.ledger import batch_write

#: About the size of a 20,000-event batch's JSON (the recorder's largest).
ROWS = 20_000


def _socket_url(db: psycopg.Connection[Any]) -> str:
    """The test database on the same server, reached through its Unix socket."""
    directory = str(db.execute("SHOW unix_socket_directories").fetchone()[0]).split(",")[0]
    port = db.execute("SHOW port").fetchone()[0]
    params = db.info.get_parameters()  # user and dbname; never a TCP address
    return psycopg.conninfo.make_conninfo(
        dbname=params["dbname"], user=params["user"], host=directory.strip(), port=port
    )


def test_a_pipeline_with_a_statement_of_megabytes_is_answered_over_a_unix_socket(
    db: psycopg.Connection[Any],
) -> None:
    big = json.dumps([{"event_id": "x" * 100, "n": n} for n in range(ROWS)])
    found: list[Any] = []

    def run() -> None:
        with psycopg.connect(_socket_url(db)) as conn, conn.pipeline(), conn.transaction():
            # As in ingest: statements whose results come back while the large one is sent.
            for _ in range(3):
                conn.execute("SELECT 1")
            cursor = conn.execute(
                "SELECT count(*) FROM json_to_recordset(%s::json) AS t(event_id text, n int)",
                (big,),
            )
            batch_write.round_trip(conn)
            found.append(cursor.fetchone())

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(60)
    assert not worker.is_alive(), "the pipeline's round trip never came back"
    assert found == [(ROWS,)]


def test_an_error_in_the_pipeline_is_raised_by_the_round_trip(
    db: psycopg.Connection[Any],
) -> None:
    with psycopg.connect(_socket_url(db)) as conn, conn.pipeline(), conn.transaction():
        conn.execute("SELECT 1 / 0")
        with pytest.raises(psycopg.errors.DivisionByZero):
            batch_write.round_trip(conn)
