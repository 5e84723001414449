"""Reconciliation: Redis counters against the rollups, and the rollups against the ledger.

The counters are a fast copy of the rollups, kept in step by versioned copies; anything that
escapes that scheme (a flushed or restarted Redis, a hand-edited hash, a bug) would otherwise
show customers wrong live usage until the segment ends. So a nightly job looks at every
customer's current segment and the one before it (the one whose invoice may still be open):

- counters against rollups: the version, every metric's state and the distinct-value counts
  must be equal. A segment that differs is repaired by dropping its counters and reloading
  them from a fresh snapshot of the rollups (dropped first, snapshotted after, so that a batch
  committed meanwhile is either in the snapshot or written by its worker afterwards, newer).
- rollups against the ledger: per metric read straight from the events (no `field`, no
  `filter`), the event count, the sum and the peak of the quantities, from one SQL statement
  (`storage.usage.audit`) that reads both in the same snapshot. A mismatch is reported, never
  repaired here: the rollups are what invoices are computed from, and a difference there
  needs a person.

This module holds the rules (what is compared, what counts as drift, when to repair); the
reads and writes are `storage.usage`'s.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pricing.aggregations import MetricState, metric_event_name
from pricing.metering import Segment, SegmentState
from pricing.money import format_decimal
from storage.catalog.cache import CustomerContext, catalog
from storage.usage import audit, counters, rollups

#: Drifted segments listed by name in a report (the counts are always exact).
MAX_LISTED = 1000
_MICROSECOND = timedelta(microseconds=1)
# Reasons that can be a batch caught between its PostgreSQL commit and its Redis write.
_TRANSIENT = frozenset({"behind", "ahead"})


@dataclass
class ReconcileReport:
    """What a run found: segments checked, counters that drifted and were repaired (the first
    `MAX_LISTED` named in `drift`), and every rollup that disagrees with the ledger."""

    started_at: datetime
    finished_at: datetime | None = None
    checked: int = 0
    drifted: int = 0
    repaired: int = 0
    drift: list[dict[str, Any]] = field(default_factory=list)
    ledger_mismatches: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "checked": self.checked,
            "drifted": self.drifted,
            "repaired": self.repaired,
            "drift": self.drift,
            "ledger_mismatches": self.ledger_mismatches,
            "started_at": self.started_at.isoformat(),
            "finished_at": None if self.finished_at is None else self.finished_at.isoformat(),
        }


def reconcile(
    *,
    at: datetime | None = None,
    customer_ids: Sequence[str] | None = None,
    repair: bool = True,
    chunk: int = 500,
) -> ReconcileReport:
    """Check (and unless `repair` is False, repair) every customer's current and previous
    segment at `at` (default now); only `customer_ids` when given. A run over all customers
    is recorded as the last reconciliation (`last_reconciled_at`)."""
    at = at or datetime.now(UTC)
    report = ReconcileReport(started_at=datetime.now(UTC))
    for ids in _customer_chunks(customer_ids, at, chunk):
        contexts = catalog.customers(set(ids))
        segments = [
            (customer_id, segment)
            for customer_id in ids
            if customer_id in contexts
            for segment in segments_to_check(contexts[customer_id], at)
        ]
        for customer_id, segment in segments:
            report.checked += 1
            reason = _check_counters(customer_id, segment)
            if reason is None:
                continue
            report.drifted += 1
            repaired = repair and _repair(customer_id, segment)
            report.repaired += int(repaired)
            if len(report.drift) < MAX_LISTED:
                report.drift.append(
                    {
                        "customer_id": customer_id,
                        "period_start": segment.start.isoformat(),
                        "reason": reason,
                        "repaired": repaired,
                    }
                )
        report.ledger_mismatches.extend(ledger_mismatches(segments))
    report.finished_at = datetime.now(UTC)
    if customer_ids is None:
        _record(report)
    return report


def segments_to_check(context: CustomerContext, at: datetime) -> list[Segment]:
    """The customer's segment at `at` (its last one if it has ended) and the one before it,
    leaving out segments whose counters have expired."""
    probe = at
    if context.ends_at is not None and context.ends_at <= at:
        probe = context.ends_at - _MICROSECOND
    current = catalog.segment(context, probe)
    if current is None:
        return []
    found = [current]
    if current.start > context.starts_at:
        previous = catalog.segment(context, current.start - _MICROSECOND)
        if previous is not None:
            found.append(previous)
    horizon = at - timedelta(seconds=counters.RETENTION)
    return [segment for segment in found if segment.end > horizon]


def _customer_chunks(
    customer_ids: Sequence[str] | None, at: datetime, chunk: int
) -> Iterator[list[str]]:
    if customer_ids is not None:
        wanted = list(dict.fromkeys(customer_ids))
        for i in range(0, len(wanted), chunk):
            yield wanted[i : i + chunk]
        return
    last = ""
    while True:  # keyset pagination: no long-running transaction over the customers table
        ids = audit.customer_ids_after(last, at, chunk)
        if not ids:
            return
        yield ids
        last = ids[-1]


def _unique_metrics(segment: Segment) -> list[str]:
    return [k for k, m in segment.plan.metrics.items() if m.aggregation == "unique_count"]


def _check_counters(customer_id: str, segment: Segment) -> str | None:
    """Why the segment's counters differ from its rollups, or None when they agree. A
    difference that an in-flight batch could explain is looked at a second time first."""
    reason = _compare(customer_id, segment)
    if reason in _TRANSIENT:
        reason = _compare(customer_id, segment)
    return reason


def _compare(customer_id: str, segment: Segment) -> str | None:
    unique_metrics = _unique_metrics(segment)
    live = counters.read_segment(customer_id, segment.start, unique_metrics)
    snap = rollups.snapshot(customer_id, segment.start)
    if live is None:
        return "missing" if snap.version > 0 else None
    if live.version < snap.version:
        return "behind"
    if live.version > snap.version:
        return "ahead"
    if not _same_state(live.state, snap.state):
        return "values"
    for metric in unique_metrics:
        if live.unique_counts.get(metric, 0) != len(set(snap.uniques.get(metric, ()))):
            return "uniques"
    return None


def _same_state(a: SegmentState, b: SegmentState) -> bool:
    empty = MetricState()
    for key in a.metrics.keys() | b.metrics.keys():
        if a.metrics.get(key, empty) != b.metrics.get(key, empty):
            return False
    return all(a.charges.get(k) == b.charges.get(k) for k in a.charges.keys() | b.charges.keys())


def _repair(customer_id: str, segment: Segment) -> bool:
    """Reload the segment's counters from the rollups; True when they agree afterwards."""
    unique_metrics = _unique_metrics(segment)
    counters.forget_segment(customer_id, segment.start, unique_metrics)
    snap = rollups.snapshot(customer_id, segment.start)  # after the forget: see module doc
    counters.load_segment(
        customer_id, segment.start, segment.end, snap.version, snap.state, snap.uniques
    )
    return _check_counters(customer_id, segment) is None


def ledger_mismatches(segments: Sequence[tuple[str, Segment]]) -> list[dict[str, Any]]:
    """Metrics whose rollup disagrees with the ledger (count, sum or peak of the quantities),
    for the metrics that read the event quantity unfiltered."""
    wanted = [
        audit.Wanted(customer_id, segment.start, segment.end, key, metric_event_name(key, metric))
        for customer_id, segment in segments
        for key, metric in segment.plan.metrics.items()
        if metric.field is None and not metric.filter and metric.aggregation != "unique_count"
    ]
    return [
        {
            "customer_id": m.customer_id,
            "period_start": m.period_start.isoformat(),
            "metric": m.metric,
            "ledger": _figures(m.ledger),
            "rollup": _figures(m.rollup),
        }
        for m in audit.ledger_vs_rollups(wanted)
    ]


def _figures(figures: audit.Figures) -> dict[str, Any]:
    return {
        "count": figures.count,
        "total": format_decimal(figures.total),
        "maximum": None if figures.maximum is None else format_decimal(figures.maximum),
    }


def _record(report: ReconcileReport) -> None:
    audit.store_last_report({k: v for k, v in report.to_json().items() if k != "drift"})


def last_report() -> dict[str, Any] | None:
    """The summary of the last run over all customers, or None if there was none."""
    return audit.last_report()


def last_reconciled_at() -> datetime | None:
    """When the last run over all customers finished (the scheduler catches up from it)."""
    report = last_report()
    if report is None or report.get("finished_at") is None:
        return None
    return datetime.fromisoformat(report["finished_at"])
