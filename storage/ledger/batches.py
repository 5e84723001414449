"""The ingest batches' data: the claim of a batch id, its recorded outcome and the running
totals, the rejected events, the batches kept after their retries ran out, and the stats.

Only reads and writes; which events are accepted, and when, is `services.ingest`'s to say.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg.types.json import Jsonb

from pricing.events import Rejection
from storage import db
from storage.payloads import exact_json, storable_json, storable_text

# The batch's outcome on its claim, and the running totals (`meter ops stats`) in the same
# statement: no extra round trip per batch. The totals row is this backend's own for the day
# (see migration 0007), so concurrent workers never queue on it; a redelivered batch returns
# before this, and a rolled-back one takes its totals with it.
TOTALS_ON_OUTCOME = """
INSERT INTO ingest_totals AS t (day, slot, accepted, duplicates)
SELECT (received_at AT TIME ZONE 'UTC')::date, pg_backend_pid(), accepted, duplicates
FROM batch
ON CONFLICT (day, slot) DO UPDATE
SET accepted = t.accepted + excluded.accepted, duplicates = t.duplicates + excluded.duplicates
"""

RECORD_OUTCOME = (
    """
WITH batch AS (
    UPDATE ingest_batches
    SET accepted = %(accepted)s, duplicates = %(duplicates)s, rejected = %(rejected)s,
        segments = %(segments)s
    WHERE batch_id = %(batch_id)s
    RETURNING received_at, accepted, duplicates
)
"""  # noqa: S608 (constant SQL text; values are parameters)
    + TOTALS_ON_OUTCOME
)


@dataclass(frozen=True)
class StoredOutcome:
    """What a batch's first delivery recorded: its counts and the (customer, segment start,
    end) it touched, whose counters a redelivery reloads from the rollups."""

    accepted: int
    duplicates: int
    segments: list[tuple[str, datetime, datetime]]


def claim(conn: db.Connection, batch_id: str, received_at: datetime) -> Any:
    """Claim the batch id (run in the caller's pipeline): the cursor's row is None when the
    batch was claimed before (a redelivery)."""
    return conn.execute(
        "INSERT INTO ingest_batches (batch_id, received_at) VALUES (%s, %s)"
        " ON CONFLICT DO NOTHING RETURNING batch_id",
        (batch_id, received_at),
    )


def record_outcome(
    conn: db.Connection,
    batch_id: str,
    *,
    accepted: int,
    duplicates: int,
    rejected: int,
    segments: Sequence[tuple[str, datetime, datetime]],
) -> None:
    """The claimed batch's outcome, and the running totals, in one statement."""
    conn.execute(
        RECORD_OUTCOME,
        {
            "accepted": accepted,
            "duplicates": duplicates,
            "rejected": rejected,
            "segments": Jsonb([[c, s.isoformat(), e.isoformat()] for c, s, e in segments]),
            "batch_id": batch_id,
        },
    )


def stored_outcome(conn: db.Connection, batch_id: str) -> StoredOutcome:
    row = conn.execute(
        "SELECT accepted, duplicates, segments FROM ingest_batches WHERE batch_id = %s",
        (batch_id,),
    ).fetchone()
    assert row is not None  # claimed before, in a committed transaction  # noqa: S101 (invariant for mypy, not validation)
    segments = [
        (customer, datetime.fromisoformat(start), datetime.fromisoformat(end))
        for customer, start, end in (row[2] or [])
    ]
    return StoredOutcome(row[0] or 0, row[1] or 0, segments)


def record_rejections(
    conn: db.Connection, batch_id: str, rejections: Sequence[Rejection], now: datetime
) -> dict[str, int]:
    rejected: dict[str, int] = {}
    if not rejections:
        return rejected
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO rejected_events (batch_id, event_id, customer_id, metric, reason,"
            " detail, payload, received_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            [
                (
                    batch_id,
                    _text(r.event_id),
                    _text(r.customer_id),
                    _text(r.metric),
                    r.reason,
                    storable_text(r.detail),
                    Jsonb(storable_json(r.payload)),
                    now,
                )
                for r in rejections
            ],
        )
    for r in rejections:
        rejected[r.reason] = rejected.get(r.reason, 0) + 1
    return rejected


def _text(value: str | None) -> str | None:
    """A rejected event's text as PostgreSQL stores it: what was sent is kept readable, with
    NUL and lone surrogates as their \\uXXXX escape (`storable_text`); the row is for reading,
    the reason is what matters."""
    return None if value is None else storable_text(value)


def mark_counters_applied(batch_id: str) -> None:
    with db.connection() as conn:
        conn.execute(
            "UPDATE ingest_batches SET counters_applied_at = now() WHERE batch_id = %s",
            (batch_id,),
        )


def record_failed_batch(batch: Any, error: str) -> None:
    """A batch that cannot be ingested: keep it whole, so it can be replayed (nothing is lost).

    The payload is kept as ASCII JSON text (`exact_json`): NUL and lone surrogates, which jsonb
    refuses, survive as their escapes and `json.loads` gives back exactly what was sent.
    """
    batch_id = batch.get("batch_id") if isinstance(batch, dict) else None
    with db.connection() as conn:
        conn.execute(
            "INSERT INTO failed_batches (batch_id, payload, error) VALUES (%s, %s, %s)",
            (
                storable_text(batch_id) if isinstance(batch_id, str) else None,
                exact_json(batch),
                storable_text(error),
            ),
        )


def failed_batches(*, pending_only: bool = True) -> list[dict[str, Any]]:
    """Batches kept after their retries ran out (the ones not replayed yet, by default).

    `payload` is the batch as it was sent; None, with `unreadable` saying why, in the one case
    where it cannot be read back (nested deeper than this process's recursion limit)."""
    with db.connection() as conn:
        rows = conn.execute(
            "SELECT id, batch_id, payload, error, failed_at, replayed_at FROM failed_batches"
            " WHERE NOT %s OR replayed_at IS NULL ORDER BY id",
            (pending_only,),
        ).fetchall()
    keys = ("id", "batch_id", "payload", "error", "failed_at", "replayed_at")
    found = []
    for row in rows:
        failed = dict(zip(keys, row, strict=True))
        try:
            failed["payload"] = json.loads(failed["payload"])
        except (ValueError, RecursionError) as exc:
            failed["payload"], failed["unreadable"] = None, f"{type(exc).__name__}: {exc}"
        found.append(failed)
    return found


def mark_replayed(failed_id: int) -> None:
    with db.connection() as conn:
        conn.execute("UPDATE failed_batches SET replayed_at = now() WHERE id = %s", (failed_id,))


def stats() -> dict[str, Any]:
    """Ingest totals since the start: accepted, duplicates, rejected by reason.

    Accepted and duplicates come from the running totals (a row per day, plus today's per
    backend), never from ingest_batches, which is pruned."""
    with db.connection() as conn:
        accepted, duplicates = conn.execute(
            "SELECT coalesce(sum(accepted), 0), coalesce(sum(duplicates), 0) FROM ingest_totals"
        ).fetchone() or (0, 0)
        rejected = dict(
            conn.execute("SELECT reason, count(*) FROM rejected_events GROUP BY reason").fetchall()
        )
    return {"accepted": int(accepted), "duplicates": int(duplicates), "rejected": rejected}
