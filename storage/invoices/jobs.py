"""Invoice jobs: one row per customer × billing period that a period close fans out.

The row follows the `generate_invoice` message through its attempts (pending -> running ->
succeeded or failed, with attempts, last error, message id and invoice id), so that ops can see
what failed and why, and run it again. Which customer × period is due is decided by
`services.periods`, what an attempt does by `services.invoice_jobs`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from psycopg import sql
from psycopg.rows import dict_row

from pricing.periods import Period
from storage import db
from storage.errors import NotFound

#: A job still pending, never attempted, whose message went out this long ago is sent again
#: (its message was lost, or the close that created it died before sending it). The stamps this
#: is judged by (created, message sent, reset for a retry) come from the caller's clock, the
#: same one `now` comes from, never from the database server's.
ORPHAN_AFTER = timedelta(hours=1)

_ERROR_LENGTH = 2000

_COLUMNS = sql.SQL(
    "id, customer_id, period_start, period_end, period_label, status, attempts, last_error,"
    " message_id, invoice_id, created_at, updated_at, started_at, finished_at"
)

_CREATE = """
INSERT INTO invoice_jobs (customer_id, period_start, period_end, period_label, created_at,
                          updated_at)
SELECT *, %s, %s FROM unnest(%s::text[], %s::timestamptz[], %s::timestamptz[], %s::text[])
ON CONFLICT (customer_id, period_start) DO NOTHING
RETURNING id
"""

_START = sql.SQL("""
INSERT INTO invoice_jobs (customer_id, period_start, period_end, period_label, status, attempts,
                          started_at)
VALUES (%s, %s, %s, %s, 'running', 1, now())
ON CONFLICT (customer_id, period_start) DO UPDATE SET
    status = 'running', attempts = invoice_jobs.attempts + 1, started_at = now(),
    updated_at = now()
RETURNING {columns}
""").format(columns=_COLUMNS)


@dataclass(frozen=True)
class JobKey:
    """A customer × billing period that needs an invoice."""

    customer_id: str
    period_start: datetime
    period_end: datetime
    period_label: str

    @classmethod
    def of(cls, customer_id: str, period: Period) -> JobKey:
        return cls(customer_id, period.start, period.end, period.label)


@dataclass(frozen=True)
class Job:
    id: int
    customer_id: str
    period_start: datetime
    period_end: datetime
    period_label: str | None
    status: str
    attempts: int
    last_error: str | None
    message_id: str | None
    invoice_id: str | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "customer_id": self.customer_id,
            "period": self.period_label,
            "period_start": self.period_start.isoformat(),
            "period_end": self.period_end.isoformat(),
            "status": self.status,
            "attempts": self.attempts,
            "last_error": self.last_error,
            "message_id": self.message_id,
            "invoice_id": self.invoice_id,
            "updated_at": self.updated_at.isoformat(),
        }

    def is_orphan(self, now: datetime) -> bool:
        return (
            self.status == "pending" and self.attempts == 0 and self.updated_at < now - ORPHAN_AFTER
        )


def open_jobs(keys: Sequence[JobKey], now: datetime | None = None) -> tuple[list[Job], set[int]]:
    """Create the jobs of `keys` that do not exist yet (as pending, stamped `now`); return
    every job of `keys` and the ids of those this call created (only these need a message)."""
    if not keys:
        return [], set()
    now = now or datetime.now(UTC)
    arrays = (
        [k.customer_id for k in keys],
        [k.period_start for k in keys],
        [k.period_end for k in keys],
        [k.period_label for k in keys],
    )
    with db.connection() as conn:
        created = {row[0] for row in conn.execute(_CREATE, (now, now, *arrays))}
        jobs = _select(
            conn,
            "(customer_id, period_start) IN (SELECT * FROM unnest(%s::text[], %s::timestamptz[]))",
            arrays[:2],
        )
    return jobs, created


def existing_keys() -> set[tuple[str, datetime]]:
    """(customer id, period start) of every job there is."""
    with db.connection() as conn:
        return {
            (row[0], row[1])
            for row in conn.execute("SELECT customer_id, period_start FROM invoice_jobs")
        }


def orphaned_jobs(now: datetime | None = None) -> list[Job]:
    """Pending jobs never attempted whose message went out more than ORPHAN_AFTER ago."""
    now = now or datetime.now(UTC)
    with db.connection() as conn:
        return _select(
            conn,
            "status = 'pending' AND attempts = 0 AND updated_at < %s",
            (now - ORPHAN_AFTER,),
        )


def attach_messages(pairs: Iterable[tuple[int, str]], now: datetime | None = None) -> None:
    """Record the id of the message sent (at `now`) for each job."""
    ids, messages = [], []
    for job_id, message_id in pairs:
        ids.append(job_id)
        messages.append(message_id)
    if not ids:
        return
    with db.connection() as conn:
        conn.execute(
            "UPDATE invoice_jobs j SET message_id = m.message_id, updated_at = %s"
            " FROM unnest(%s::bigint[], %s::text[]) AS m(id, message_id) WHERE j.id = m.id",
            (now or datetime.now(UTC), ids, messages),
        )


def start_attempt(
    customer_id: str, period_start: datetime, period: Period | None = None
) -> Job | None:
    """Count an attempt and mark the job running. Without `period`, only an existing job is
    updated (None if there is none); with it, a missing job is created."""
    with _committed() as conn:
        if period is None:
            query = sql.SQL(
                "UPDATE invoice_jobs SET status = 'running', attempts = attempts + 1,"
                " started_at = now(), updated_at = now()"
                " WHERE customer_id = %s AND period_start = %s RETURNING {columns}"
            ).format(columns=_COLUMNS)
            cursor = conn.cursor(row_factory=dict_row).execute(query, (customer_id, period_start))
        else:
            cursor = conn.cursor(row_factory=dict_row).execute(
                _START,
                (customer_id, period.start, period.end, period.label),
            )
    row = cursor.fetchone()
    return Job(**row) if row else None


def record_error(customer_id: str, period_start: datetime, error: str) -> None:
    """A failed attempt: back to pending (a retry is due) with its error."""
    _update(
        customer_id, period_start, "status = 'pending', last_error = %s", (error[:_ERROR_LENGTH],)
    )


def succeed(
    customer_id: str, period_start: datetime, invoice_id: str, *, conn: db.Connection | None = None
) -> None:
    """The job is done: its invoice exists. On `conn`, inside the caller's transaction."""
    _update(
        customer_id,
        period_start,
        "status = 'succeeded', invoice_id = %s, finished_at = now()",
        (invoice_id,),
        conn=conn,
    )


def fail(customer_id: str, period_start: datetime, error: str | None = None) -> None:
    """Retries are exhausted (or the error is permanent): the job is failed, keeping the error
    of its last attempt."""
    _update(
        customer_id,
        period_start,
        "status = 'failed', last_error = coalesce(last_error, %s, 'retries exhausted'),"
        " finished_at = now()",
        (error[:_ERROR_LENGTH] if error else None,),
    )


def get_jobs(ids: Sequence[int]) -> list[Job]:
    """The jobs `ids`, by id; NotFound naming any that does not exist."""
    with db.connection() as conn:
        jobs = _select(conn, "id = ANY(%s)", (list(ids),))
    _check_found(ids, jobs)
    return jobs


def failed_jobs() -> list[Job]:
    with db.connection() as conn:
        return _select(conn, "status = 'failed'", ())


def reset_for_retry(ids: Sequence[int], now: datetime | None = None) -> list[Job]:
    """Mark jobs pending again (at `now`) before they are re-run (their attempts keep
    counting)."""
    with db.connection() as conn:
        jobs = _select(
            conn,
            "id = ANY(%s)",
            (now or datetime.now(UTC), list(ids)),
            update="status = 'pending', updated_at = %s",
        )
    _check_found(ids, jobs)
    return jobs


def status_counts(ids: Sequence[int]) -> dict[str, int]:
    """How many of the jobs `ids` are in each status."""
    with db.connection() as conn:
        rows = conn.execute(
            "SELECT status, count(*) FROM invoice_jobs WHERE id = ANY(%s) GROUP BY status",
            (list(ids),),
        ).fetchall()
    counts = dict.fromkeys(("pending", "running", "succeeded", "failed"), 0)
    counts.update({status: int(count) for status, count in rows})
    return counts


def _update(
    customer_id: str,
    period_start: datetime,
    assignments: str,
    params: tuple[Any, ...],
    *,
    conn: db.Connection | None = None,
) -> None:
    query = sql.SQL(
        "UPDATE invoice_jobs SET {assignments}, updated_at = now()"
        " WHERE customer_id = %s AND period_start = %s"
    ).format(assignments=sql.SQL(assignments))
    if conn is not None:
        conn.execute(query, (*params, customer_id, period_start))
        return
    with _committed() as own:
        own.execute(query, (*params, customer_id, period_start))


@contextmanager
def _committed() -> Iterator[db.Connection]:
    """A pooled connection whose statements and commit go out together (one round trip: each
    invoice job updates its row twice, so this is on the hot path of a period close)."""
    with db.connection() as conn, conn.pipeline():
        yield conn
        conn.commit()


def _select(
    conn: db.Connection, where: str, params: Any, *, update: str | None = None
) -> list[Job]:
    query: sql.Composable
    if update is None:
        template = sql.SQL("SELECT {columns} FROM invoice_jobs WHERE {where} ORDER BY id")
    else:
        template = sql.SQL("UPDATE invoice_jobs SET {update} WHERE {where} RETURNING {columns}")
    query = template.format(columns=_COLUMNS, where=sql.SQL(where), update=sql.SQL(update or ""))
    rows = conn.cursor(row_factory=dict_row).execute(query, params).fetchall()
    return sorted((Job(**row) for row in rows), key=lambda job: job.id)


def _check_found(ids: Sequence[int], jobs: Sequence[Job]) -> None:
    missing = sorted(set(ids) - {job.id for job in jobs})
    if missing:
        raise NotFound(f"job_id: no invoice job {', '.join(map(str, missing))}")
