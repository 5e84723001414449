"""What the ingest bookkeeping keeps, and the nightly pruning of the rest.

Both `event_ids` (the dedup index) and `ingest_batches` (the batch claims) are kept for the
accepted window plus a margin, measured from when a batch was received (the "now" its window
was checked against):

- An event received at r was stamped at most METER_ACCEPT_FUTURE_SECONDS after r, so from
  r + METER_ACCEPT_PAST_DAYS + that allowance on it can never be accepted again, whatever
  redelivers it: until then its id is known, and a resend is a duplicate even with another
  timestamp. The extra day covers clocks that disagree between workers.
- A batch whose claim is gone and that is redelivered anyway (Dramatiq retries end within
  hours; a replay of `failed_batches` can come any time) finds each of its events either still
  in `event_ids` (a duplicate) or out of the accepted window (rejected): its usage is never
  counted twice. Pruning claims no earlier than the ids keeps that true.

Deletes go in chunks of their own transactions, so pruning never holds long locks; running it
twice, or concurrently, deletes nothing more. `meter ops stats` does not read `ingest_batches`
(its totals live in `ingest_totals`), so pruning changes no statistic.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from storage import db
from storage.settings import get_settings

#: Rows deleted per transaction.
CHUNK = 5000
#: Clocks of different workers may disagree: ids and claims are kept a day past the window.
MARGIN = timedelta(days=1)

_DELETE_EVENT_IDS = """
DELETE FROM event_ids WHERE ctid = ANY(ARRAY(
    SELECT ctid FROM event_ids WHERE received_at < %(cutoff)s LIMIT %(chunk)s))
"""

_DELETE_CLAIMS = """
DELETE FROM ingest_batches WHERE batch_id IN (
    SELECT batch_id FROM ingest_batches WHERE received_at < %(cutoff)s
    ORDER BY received_at LIMIT %(chunk)s)
"""

# A past day's per-backend rows become its one row in slot 0; the sums do not change.
_FOLD_TOTALS = """
WITH folded AS (
    DELETE FROM ingest_totals WHERE day < %(before)s AND slot <> 0
    RETURNING day, accepted, duplicates
), merged AS (
    INSERT INTO ingest_totals AS t (day, slot, accepted, duplicates)
    SELECT day, 0, sum(accepted), sum(duplicates) FROM folded GROUP BY day
    ON CONFLICT (day, slot) DO UPDATE
    SET accepted = t.accepted + excluded.accepted, duplicates = t.duplicates + excluded.duplicates
)
SELECT count(*) FROM folded
"""


@dataclass(frozen=True)
class PruneReport:
    cutoff: datetime
    event_ids: int
    ingest_batches: int
    totals_folded: int


def cutoff(now: datetime) -> datetime:
    """Rows received before this are out of every window that could accept their events."""
    settings = get_settings()
    return (
        now
        - timedelta(
            days=settings.METER_ACCEPT_PAST_DAYS, seconds=settings.METER_ACCEPT_FUTURE_SECONDS
        )
        - MARGIN
    )


def prune(now: datetime, *, chunk: int = CHUNK) -> PruneReport:
    """The nightly job: forget ids and claims older than the window, fold past days' totals."""
    before = cutoff(now)
    return PruneReport(
        cutoff=before,
        event_ids=prune_dedup_index(now, chunk=chunk),
        ingest_batches=prune_claims(now, chunk=chunk),
        totals_folded=fold_totals(now),
    )


def prune_dedup_index(now: datetime, *, chunk: int = CHUNK) -> int:
    """Delete `event_ids` rows received before `cutoff(now)`; return how many."""
    return _delete_in_chunks(_DELETE_EVENT_IDS, cutoff(now), chunk)


def prune_claims(now: datetime, *, chunk: int = CHUNK) -> int:
    """Delete `ingest_batches` claims received before `cutoff(now)`; return how many."""
    return _delete_in_chunks(_DELETE_CLAIMS, cutoff(now), chunk)


def fold_totals(now: datetime) -> int:
    """Fold the per-backend totals rows of days before yesterday (UTC) into one row per day,
    so a stats read sums about one row per day. Returns the rows folded away."""
    before = (now - timedelta(days=1)).date()
    with db.connection() as conn:
        row = conn.execute(_FOLD_TOTALS, {"before": before}).fetchone()
    return int(row[0]) if row else 0


def pruning_overdue(now: datetime) -> bool:
    """A night's pruning was missed: the oldest claim is more than a day past the cutoff."""
    with db.connection() as conn:
        row = conn.execute("SELECT min(received_at) FROM ingest_batches").fetchone()
    oldest = row[0] if row else None
    return oldest is not None and oldest < cutoff(now) - timedelta(days=1)


def _delete_in_chunks(statement: str, before: datetime, chunk: int) -> int:
    if chunk < 1:
        raise ValueError(f"chunk: must be at least 1, not {chunk}")
    total = 0
    while True:
        with db.connection() as conn:
            deleted = conn.execute(statement, {"cutoff": before, "chunk": chunk}).rowcount
        total += deleted
        if deleted < chunk:
            return total
