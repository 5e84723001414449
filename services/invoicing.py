"""Generating an invoice: compose it from the rollups with no lock held, then write it in one
short transaction under the customer's lock after checking its inputs did not change (else
start over). A draft is recomputed in place; a finalized, paid or void invoice never changes;
late usage for a finalized period becomes an adjustment on the next invoice.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

from pricing.invoicing import (
    InvoiceDraft,
    InvoiceLine,
    PricedSegment,
    adjustment_lines,
    compose,
    price_segment,
    version_key,
)
from pricing.metering import Segment, carried_levels, segment_usage
from pricing.periods import Period, billing_period
from services.periods import period_of
from storage import db
from storage.catalog.cache import CustomerContext, catalog, customer_context
from storage.errors import Conflict, InvalidInput
from storage.invoices import records, writes
from storage.invoices.records import Invoice, Known, read_state
from storage.settings import get_settings
from storage.usage import rollups

#: How many times `generate` composes again when its inputs changed while it composed.
_COMPOSE_ATTEMPTS = 5


def generate(
    customer_id: str,
    period_start: datetime,
    *,
    now: datetime | None = None,
    on_written: Callable[[db.Connection, str], None] | None = None,
) -> Invoice:
    """The invoice of a customer × ended period: created as a draft, or a draft recomputed in
    place; an invoice already finalized or paid is returned unchanged. A void invoice no longer
    counts: generating again issues a new one that `replaces` it.

    `on_written(conn, invoice_id)` runs in the transaction that stores the invoice, when one
    does: the caller's bookkeeping then commits with the invoice, or not at all.
    """
    now = now or datetime.now(UTC)
    for _ in range(_COMPOSE_ATTEMPTS):
        with db.connection() as conn:
            context = customer_context(customer_id, conn=conn)
            period = period_of(context, period_start)
            if period.end > now:
                raise InvalidInput(
                    f"period {period.label} of customer {customer_id!r} has not ended"
                    f" (it ends {period.end.isoformat()})"
                )
            live, known, others = read_state(conn, customer_id, period)
        if live is not None and live.status != "draft":
            return live
        draft = _compose(context, period, known, others)
        invoice = _write(draft, known, on_written)
        if invoice is not None:
            return invoice
    raise Conflict(
        f"customer {customer_id!r} period {period.label}: usage kept changing while the"
        " invoice was computed; try again"
    )


def refresh_after_late_usage(
    customer_id: str, segment_start: datetime, *, now: datetime | None = None
) -> Invoice | None:
    """Late usage arrived for a segment that has ended: recompute the draft it affects.

    That is the draft of the segment's own period, or, when that invoice is already final, the
    customer's next draft (which bills the difference as an adjustment). None when there is no
    such draft: an invoice generated later will include it anyway.
    """
    period_start = records.first_draft_ending_after(customer_id, segment_start)
    if period_start is None:
        return None
    return generate(customer_id, period_start, now=now)


def _compose(
    context: CustomerContext, period: Period, known: Known, others: Sequence[Invoice]
) -> InvoiceDraft:
    segments = catalog.segments(context, period)
    if not segments:
        raise InvalidInput(f"customer {context.customer_id!r} has no plan in period {period.label}")
    priced = _priced(context.customer_id, segments)
    adjustments, rerated_versions = _adjustments(context, period, known, others)
    try:
        return compose(context.customer_id, period, priced, adjustments, rerated_versions)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None


def _priced(customer_id: str, segments: Sequence[Segment]) -> list[PricedSegment]:
    """The segments of one period with their usage from their rollups, each starting from the
    levels the earlier ones left, with the same functions the live estimate uses."""
    snaps = [rollups.snapshot(customer_id, segment.start) for segment in segments]
    levels = carried_levels([(s, snap.state) for s, snap in zip(segments, snaps, strict=True)])
    priced = []
    for segment, snap, carried in zip(segments, snaps, levels, strict=True):
        plan = segment.plan
        counts = {
            key: len(snap.uniques.get(key, ()))
            for key, metric in plan.metrics.items()
            if metric.aggregation == "unique_count"
        }
        usage, results = segment_usage(plan, snap.state, counts, segment, carried)
        priced.append(PricedSegment(segment, usage, results, snap.version))
    return priced


def _adjustments(
    context: CustomerContext, period: Period, known: Known, others: Sequence[Invoice]
) -> tuple[list[InvoiceLine], dict[str, int]]:
    """Adjustment lines for earlier periods whose final invoice has been overtaken by late
    usage: a segment whose rollup version is above the highest version any live invoice
    priced for it. Returns the lines and the versions they priced."""
    billed_versions: dict[str, int] = {}
    for other in others:
        if other.status != "void":
            for key, version in other.rollup_versions.items():
                billed_versions[key] = max(billed_versions.get(key, 0), int(version))
    lines: list[InvoiceLine] = []
    versions: dict[str, int] = {}
    for earlier in others:
        if earlier.status not in ("finalized", "paid") or earlier.period_start >= period.start:
            continue
        recorded = _recorded_segments(context, earlier)
        segments = _current_segments(context, earlier, recorded)
        if all(
            known.versions.get(version_key(start), 0) <= billed_versions.get(version_key(start), 0)
            for start in {s.start for s in (*recorded, *segments)}
        ):
            continue
        priced = _priced(context.customer_id, segments)
        rerated = [line for p in priced for line in price_segment(p, name_plan=True)]
        billed = writes.billed_lines(context.customer_id, earlier, period.start)
        lines += adjustment_lines(
            period_of(context, earlier.period_start),
            rerated,
            billed,
            history_changed=_drawn(segments) != _drawn(recorded),
        )
        versions.update({version_key(p.segment.start): p.rollup_version for p in priced})
    return lines, versions


def _recorded_segments(context: CustomerContext, invoice: Invoice) -> list[Segment]:
    """The segments an invoice priced, with the plan versions it priced them with."""
    found = []
    for recorded in invoice.segments:
        plan = catalog.plan_version(recorded["plan"], int(recorded["plan_version"]))
        period = billing_period(
            invoice.period_start,
            timezone=invoice.timezone,
            anchor_day=context.anchor_day,
            interval=plan.interval,
        )
        found.append(
            Segment(
                plan,
                int(recorded["plan_version"]),
                period,
                datetime.fromisoformat(recorded["start"]),
                datetime.fromisoformat(recorded["end"]),
                invoice.timezone,
            )
        )
    return found


def _current_segments(
    context: CustomerContext, invoice: Invoice, recorded: Sequence[Segment]
) -> list[Segment]:
    """The segments of an invoice's period under the customer's history as it is now: those
    the invoice priced keep the plan versions it priced them with; a plan change or a
    cancellation since (which re-derived the rollups) redraws them."""
    priced = {(s.start, s.end, s.plan.code): s for s in recorded}
    current = catalog.segments(context, period_of(context, invoice.period_start))
    return [priced.get((s.start, s.end, s.plan.code), s) for s in current]


def _drawn(segments: Sequence[Segment]) -> list[tuple[datetime, datetime, str]]:
    return [(s.start, s.end, s.plan.code) for s in segments]


def _write(
    draft: InvoiceDraft,
    known: Known,
    on_written: Callable[[db.Connection, str], None] | None = None,
) -> Invoice | None:
    """Store the draft unless its inputs changed since they were read (then None)."""
    document = json.loads(json.dumps(draft.to_json()))
    customer_id = draft.customer_id
    # One transaction in two round trips: lock and re-read, then write and commit. Leaving
    # early (nothing to write) commits the empty transaction, which releases the lock.
    with db.connection() as conn, conn.pipeline():
        live, known_now, _ = read_state(conn, customer_id, draft.period, lock=True)
        if known_now != known or any(
            known.versions.get(key, 0) != version for key, version in draft.rollup_versions.items()
        ):
            return None
        if live is not None and (live.status != "draft" or live.document == document):
            return live
        invoice_id = live.id if live is not None else f"inv_{secrets.token_hex(8)}"
        grace = timedelta(seconds=get_settings().METER_INVOICE_GRACE_SECONDS)
        written = writes.write_draft(
            conn,
            invoice_id,
            draft,
            document,
            grace_until=draft.period.end + grace,
            new=live is None,
        )
        if on_written is not None:
            on_written(conn, invoice_id)
        conn.commit()
    return writes.stored(written)
