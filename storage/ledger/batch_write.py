"""A classified batch written by one statement: ledger, rollups, daily totals, versions and
the batch's outcome, with PostgreSQL doing the per-event work.

The accepted events travel as one JSON document (`msgspec` encodes them in C); PostgreSQL parses
it (`json_to_recordset`), inserts the events it has not seen (`event_ids` over the accepted
window, then `usage_events`), and derives from the rows actually inserted, with `GROUP BY`:

- the rollup delta of every *plain* metric (sum, count, max, latest of the event's quantity,
  no filter, no field, no percentage charge), merged into `usage_rollups` by the same rule as
  `storage.usage.rollups` (`rollups.MERGE_ON_CONFLICT`), and the daily totals;
- the version bump of every segment touched (the row lock that orders writers of a segment);
- the batch's outcome on its claim and the running totals (`storage.ledger.batches`).

Events of the other metrics (`python` routes) are returned by id, for the caller to fold in
Python (`pricing.metering.build_deltas`, `rollups.apply(..., bump=False)`). The statement
returns, in one result, those events (`p`), the new versions (`v`) and the number of events
inserted (`c`); the caller reads the merged rollups back (`storage.usage.rollups`). The
batch's claim is a statement of its own, earlier in the transaction: the caller rolls
everything back when the claim was not new.

Nearly every batch holds only new events, so the statement first assumes it (`write_batch`,
behind a savepoint): plain inserts, no conflict check per event and no join of the events with
the ids inserted, about a sixth of the statement's PostgreSQL CPU (bench/README.md, issue 11).
A known event makes it fail with a unique violation on `event_ids` (or the ledger's key); the
caller then rolls back to the savepoint and sends the statement that skips the known events
(`write_batch(..., after_known_event=True)`): one more round trip for a batch with
duplicates, the same result.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import msgspec
import psycopg

from pricing.events import Event
from storage import db
from storage.ledger.batches import TOTALS_ON_OUTCOME
from storage.usage.rollups import MERGE_ON_CONFLICT

_ENCODER = msgspec.json.Encoder()

# The events and the routes, then the two inserts (`_INSERT_NEW` or `_INSERT_DEDUP`, which name
# the inserted rows `fresh`), then the deltas (`_DERIVE`), all in one statement.
_STAGE = """
WITH input AS (
    SELECT * FROM json_to_recordset(%(events)s::json) AS t(
        event_id text, customer_id text, metric text, quantity numeric, timestamp timestamptz,
        properties json)
    -- In key order (bytewise, the cheap sort; equality is the same in every collation): both
    -- inserts below then walk their index's leaf pages in order instead of at random, about
    -- 6 µs of PostgreSQL CPU per event less (bench/README.md, issue 11).
    ORDER BY customer_id COLLATE "C", event_id COLLATE "C"
), route AS (
    -- One row per plain metric reading the name; one with key NULL where Python folds them.
    SELECT r.customer_id, r.start, r."end", r.timezone AS tz, r.day, r.name, k.key
    FROM json_to_recordset(%(routes)s::json) AS r(customer_id text, start timestamptz,
        "end" timestamptz, timezone text, day date, name text, keys text[])
    LEFT JOIN LATERAL unnest(r.keys) AS k(key) ON true
)"""

# Most events have no properties: their '{}' is not parsed as jsonb (about 2.5 µs of PostgreSQL
# CPU per event, an eighth of this statement); the others are, and an empty object is NULL.
_LEDGER_ROW = """i.customer_id, i.event_id, i.metric, i.quantity, i.timestamp,
        CASE WHEN i.properties::text = '{}' THEN NULL
            ELSE NULLIF(i.properties::jsonb, '{}'::jsonb) END, %(batch_id)s"""

# Every event is new (the usual case): plain inserts, no arbiter check, no join with the ids
# inserted. A known event fails the statement with a unique violation on either key
# (`is_known_event`); the caller then rolls back to the savepoint and sends `_INSERT_DEDUP`.
_INSERT_NEW = f"""
, ids AS (
    INSERT INTO event_ids (customer_id, event_id, timestamp, received_at)
    SELECT customer_id, event_id, timestamp, %(received_at)s FROM input
), ins AS (
    INSERT INTO usage_events (customer_id, event_id, metric, quantity, timestamp, properties,
        batch_id)
    SELECT {_LEDGER_ROW}
    FROM input i
), fresh AS NOT MATERIALIZED (
    SELECT customer_id, event_id, metric, quantity, timestamp FROM input
)"""  # noqa: S608 (constant SQL text)

# Some events may be known: each is inserted only if `event_ids` (the accepted window) does not
# hold its id yet, whatever its timestamp.
_INSERT_DEDUP = f"""
, ids AS (
    INSERT INTO event_ids (customer_id, event_id, timestamp, received_at)
    SELECT customer_id, event_id, timestamp, %(received_at)s FROM input
    ON CONFLICT DO NOTHING
    RETURNING customer_id, event_id
), fresh AS (
    INSERT INTO usage_events (customer_id, event_id, metric, quantity, timestamp, properties,
        batch_id)
    SELECT {_LEDGER_ROW}
    FROM input i JOIN ids f USING (customer_id, event_id)
    RETURNING customer_id, event_id, metric, quantity, timestamp
)"""  # noqa: S608 (constant SQL text)

_DERIVE = f"""
, routed AS (
    SELECT n.customer_id, n.event_id, n.quantity, n.timestamp, r.start, r."end", r.tz, r.day,
        r.key
    FROM fresh n JOIN route r ON r.customer_id = n.customer_id AND r.name = n.metric
        AND n.timestamp >= r.start AND n.timestamp < r."end"
), delta AS (
    -- One sort: each group's latest event first; the aggregates span the whole group.
    SELECT customer_id, key, start, "end", n, total, maximum, latest_at, latest_event_id,
        latest_value
    FROM (
        SELECT customer_id, key, start, "end", count(*) OVER w AS n,
            sum(quantity) OVER w AS total, max(quantity) OVER w AS maximum,
            timestamp AS latest_at, event_id AS latest_event_id, quantity AS latest_value,
            row_number() OVER w AS rank
        FROM routed WHERE key IS NOT NULL
        WINDOW w AS (PARTITION BY customer_id, key, start
            ORDER BY timestamp DESC, event_id COLLATE "C" DESC
            ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)
    ) ranked
    WHERE rank = 1
), rollup AS (
    INSERT INTO usage_rollups AS r (customer_id, metric, period_start, period_end,
        event_count, total, maximum, latest_at, latest_event_id, latest_value, weighted_v,
        weighted_vt, charge_state, updated_at)
    SELECT customer_id, key, start, "end", n, total, maximum, latest_at, latest_event_id,
        latest_value, 0, 0, NULL, now()
    FROM delta ORDER BY 1, 2, 3
    {MERGE_ON_CONFLICT}
), daily AS (
    INSERT INTO usage_daily AS d (customer_id, metric, day, event_count, total)
    SELECT customer_id, key, coalesce(day, (timestamp AT TIME ZONE tz)::date), count(*),
        sum(quantity)
    FROM routed WHERE key IS NOT NULL GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
    ON CONFLICT (customer_id, metric, day) DO UPDATE SET
        event_count = d.event_count + excluded.event_count,
        total = d.total + excluded.total
), touched AS (
    SELECT customer_id, start, "end" FROM delta
    UNION
    SELECT customer_id, start, "end" FROM route WHERE key IS NULL
), bump AS (
    INSERT INTO usage_periods (customer_id, period_start, period_end, version)
    SELECT customer_id, start, "end", 1 FROM touched ORDER BY 1, 2
    ON CONFLICT (customer_id, period_start) DO UPDATE SET version = usage_periods.version + 1
    RETURNING customer_id, period_start, period_end, version
), counts AS (
    SELECT count(*) AS accepted FROM fresh
), batch AS (
    UPDATE ingest_batches SET accepted = c.accepted,
        duplicates = %(duplicates)s + %(candidates)s - c.accepted, rejected = %(rejected)s,
        segments = (SELECT coalesce(jsonb_agg(jsonb_build_array(customer_id,
            to_jsonb(period_start), to_jsonb(period_end))), '[]') FROM bump)
    FROM counts c
    WHERE batch_id = %(batch_id)s
    RETURNING received_at, c.accepted, duplicates
), totals AS (
    {TOTALS_ON_OUTCOME}
)
SELECT 'p', customer_id, event_id, NULL, NULL, NULL
FROM routed WHERE key IS NULL
UNION ALL
SELECT 'v', customer_id, NULL, period_start, period_end, version
FROM bump
UNION ALL
SELECT 'c', NULL, NULL, NULL, NULL, accepted FROM counts
"""  # noqa: S608 (constant SQL text; values are parameters)

#: The statement for a batch whose events are all new; fails on a known one.
WRITE_NEW_BATCH = _STAGE + _INSERT_NEW + _DERIVE
#: The statement that skips the known events (after `WRITE_NEW_BATCH` failed).
WRITE_BATCH = _STAGE + _INSERT_DEDUP + _DERIVE


@dataclass(frozen=True)
class Route:
    """Where a segment's events of one name go: the plain metrics that read them (`keys`),
    or Python (`keys` empty) when any metric reading them needs more than the quantity."""

    customer_id: str
    start: datetime
    end: datetime
    timezone: str
    name: str
    keys: tuple[str, ...]
    #: The local day of every event of the batch in `timezone`, when they all share one (a
    #: batch spans a fraction of a second): PostgreSQL then converts no timestamp.
    day: date | None = None


@dataclass
class WriteResult:
    accepted: int = 0
    python_events: set[tuple[str, str]] = field(default_factory=set)
    versions: dict[tuple[str, datetime], tuple[datetime, int]] = field(default_factory=dict)


def encode_events(events: Sequence[Event]) -> str:
    """The events as the statement's JSON parameter (one C call for the whole batch)."""
    return _ENCODER.encode(events).decode()


#: Where the statement for new events starts: a known event rolls back to here.
_SAVEPOINT = "batch_write"


def write_batch(
    conn: db.Connection,
    batch_id: str,
    events: Sequence[Event],
    routes: Sequence[Route],
    *,
    received_at: datetime,
    duplicates: int,
    rejected: int,
    after_known_event: bool = False,
) -> Any:
    """Send the batch's statement in the caller's pipeline; `read_result(cursor)` once synced.

    First the statement for a batch whose events are all new, behind a savepoint. If the sync
    raises a unique violation that `is_known_event` recognizes, call again with the same
    arguments and `after_known_event=True`: that rolls back to the savepoint (what was sent
    before it stays) and sends the statement that skips the known events."""
    if after_known_event:
        conn.execute(f"ROLLBACK TO SAVEPOINT {_SAVEPOINT}")
        statement = WRITE_BATCH
    else:
        conn.execute(f"SAVEPOINT {_SAVEPOINT}")
        statement = WRITE_NEW_BATCH
    return conn.execute(
        statement, _parameters(batch_id, events, routes, received_at, duplicates, rejected)
    )


def round_trip(conn: db.Connection) -> None:
    """Send what the caller's pipeline holds and wait for its results (an error among them is
    raised here). Not `Pipeline.sync()`: with a statement of megabytes queued, psycopg 3.3's
    sync waits forever over a Unix socket (the server waits for the rest of the statement);
    a fetch flushes it. The probe is never prepared: a statement prepared in a pipeline
    segment that an error aborts would be remembered by psycopg but unknown to the server."""
    conn.execute("SELECT 1", prepare=False).fetchone()


def is_known_event(error: psycopg.errors.UniqueViolation) -> bool:
    """Whether `write_batch`'s statement failed because an event's id was already stored."""
    name = error.diag.constraint_name or ""
    return name == "event_ids_pkey" or name.startswith("usage_events")


def _parameters(
    batch_id: str,
    events: Sequence[Event],
    routes: Sequence[Route],
    received_at: datetime,
    duplicates: int,
    rejected: int,
) -> dict[str, Any]:
    return {
        "events": encode_events(events),
        "routes": _ENCODER.encode(routes).decode(),
        "received_at": received_at,
        "batch_id": batch_id,
        "duplicates": duplicates,
        "candidates": len(events),
        "rejected": rejected,
    }


def read_result(cursor: Any) -> WriteResult:
    result = WriteResult()
    for row in cursor.fetchall():
        kind = row[0]
        if kind == "p":
            result.python_events.add((row[1], row[2]))
        elif kind == "v":
            result.versions[(row[1], row[3])] = (row[4], int(row[5]))
        else:
            result.accepted = int(row[5])
    return result
