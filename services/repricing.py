"""Pricing many customers' billing periods at once from their rollups, with the invoice's own
pricing code (`pricing.invoicing.compose`): as billed (each segment under its own plan, as
`services.invoicing` does for one customer) or under another plan (price backtesting).

Reads only: the rollups of every segment in one read-only transaction, the customers and
their histories in one more. No lock is taken and nothing is written.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from pricing.charges import MetricUsage, PercentageCharge
from pricing.errors import UserError
from pricing.invoicing import InvoiceDraft, PricedSegment, compose
from pricing.metering import Segment, SegmentState, carried_levels, segment_usage
from pricing.periods import Period, period_for_label
from pricing.plans import Plan
from services.periods import billing_interval, period_at
from storage.analytics.usage import SegmentKey, SegmentUsage
from storage.analytics.usage import segment_usage as read_segment_usage
from storage.catalog.cache import CustomerContext, catalog


@dataclass(frozen=True)
class CustomerPeriod:
    """One customer's billing period and the segments of it (one per plan it was on)."""

    customer_id: str
    period: Period
    segments: tuple[Segment, ...]

    @property
    def keys(self) -> list[SegmentKey]:
        return [(self.customer_id, segment.start) for segment in self.segments]


def periods_at(contexts: Iterable[CustomerContext], at: datetime) -> list[CustomerPeriod]:
    """Each customer's billing period around `at`, for those subscribed at some time in it."""
    found = []
    for context in contexts:
        if context.starts_at > at:
            continue
        period = period_at(context, at)
        segments = catalog.segments(context, period)
        if segments:
            found.append(CustomerPeriod(context.customer_id, period, tuple(segments)))
    return found


def periods_for_label(
    contexts: Iterable[CustomerContext], label: str, now: datetime
) -> tuple[list[CustomerPeriod], dict[str, str]]:
    """Each customer's billing period named `label` ('YYYY-MM', or 'YYYY' for yearly plans),
    for those subscribed in it; and the customers left out with why (a yearly customer for a
    monthly label, or the other way round)."""
    interval = "month" if "-" in label else "year"
    period_for_label(label, interval=interval)  # a malformed label is refused here
    found, skipped = [], {}
    for context in contexts:
        own = billing_interval(context, now)
        if own != interval:
            skipped[context.customer_id] = f"billed by the {own}, not by the {interval}"
            continue
        period = period_for_label(
            label, timezone=context.timezone, anchor_day=context.anchor_day, interval=interval
        )
        segments = catalog.segments(context, period)
        if segments:
            found.append(CustomerPeriod(context.customer_id, period, tuple(segments)))
    return found, skipped


def read_usage(periods: Sequence[CustomerPeriod]) -> dict[SegmentKey, SegmentUsage]:
    """The rollups of every segment of these periods, in one read (the distinct values only
    when a plan of theirs counts some)."""
    plans = {id(s.plan): s.plan for period in periods for s in period.segments}.values()
    uniques = any(
        metric.aggregation == "unique_count" for plan in plans for metric in plan.metrics.values()
    )
    return read_segment_usage([key for period in periods for key in period.keys], uniques=uniques)


def as_billed(
    period: CustomerPeriod,
    usage: Mapping[SegmentKey, SegmentUsage],
    *,
    documents: bool = True,
) -> InvoiceDraft:
    """The period priced as its invoice prices it: each segment under its own plan, starting
    from the levels the earlier segments left (`services.invoicing._priced`). Without
    `documents` the lines carry amounts only (the totals of many customers)."""
    found = [usage[key] for key in period.keys]
    levels = carried_levels(
        [(segment, u.state) for segment, u in zip(period.segments, found, strict=True)]
    )
    priced = []
    for segment, segment_use, carried in zip(period.segments, found, levels, strict=True):
        counts = _unique_counts(segment.plan, segment_use.uniques)
        quantities, results = segment_usage(
            segment.plan, segment_use.state, counts, segment, carried
        )
        priced.append(PricedSegment(segment, quantities, results, 0))
    return compose(period.customer_id, period.period, priced, documents=documents)


def usage_at(
    period: CustomerPeriod, usage: Mapping[SegmentKey, SegmentUsage], at: datetime
) -> tuple[Segment, dict[str, MetricUsage]] | None:
    """The segment in force at `at` and each metric's usage in it, as the invoice reads it
    (with the levels the earlier segments left), without pricing anything; None when the
    customer has no segment at `at`."""
    found = [usage[key] for key in period.keys]
    levels = carried_levels(
        [(segment, u.state) for segment, u in zip(period.segments, found, strict=True)]
    )
    for segment, segment_use, carried in zip(period.segments, found, levels, strict=True):
        if segment.start <= at < segment.end:
            counts = _unique_counts(segment.plan, segment_use.uniques)
            quantities, _ = segment_usage(segment.plan, segment_use.state, counts, segment, carried)
            return segment, quantities
    return None


def under_plan(
    plan: Plan,
    period: CustomerPeriod,
    usage: Mapping[SegmentKey, SegmentUsage],
    *,
    documents: bool = True,
) -> InvoiceDraft:
    """The period priced as if `plan` had been in force for all of it: the usage of every
    segment merged (the same events, read by the same metric definitions), one segment from
    the first segment's start to the last one's end (a customer that started or left in the
    period keeps its proration)."""
    for billed in {id(segment.plan): segment.plan for segment in period.segments}.values():
        _check_comparable_once(plan, billed)
    state = SegmentState()
    uniques: dict[str, set[str]] = {}
    for key in period.keys:
        state = state.merge(usage[key].state)
        for metric, values in usage[key].uniques.items():
            uniques.setdefault(metric, set()).update(values)
    first, last = period.segments[0], period.segments[-1]
    segment = Segment(plan, 0, period.period, first.start, last.end, first.timezone)
    quantities, results = segment_usage(plan, state, _unique_counts(plan, uniques), segment)
    return compose(
        period.customer_id,
        period.period,
        [PricedSegment(segment, quantities, results, 0)],
        documents=documents,
    )


_checked: dict[tuple[int, int], tuple[Plan, Plan]] = {}


def _check_comparable_once(plan: Plan, billed: Plan) -> None:
    """`check_comparable`, remembered per pair of plan objects (the catalog's are cached)."""
    key = (id(plan), id(billed))
    known = _checked.get(key)
    if known is not None and known[0] is plan and known[1] is billed:
        return
    check_comparable(plan, billed)
    if len(_checked) > 1000:
        _checked.clear()
    _checked[key] = (plan, billed)


def check_comparable(plan: Plan, billed: Plan) -> None:
    """Refuse (UserError naming the field of `plan`) what the rollups of a period billed under
    `billed` cannot answer for `plan`: a metric read from other events, another property or
    filter (the rollups keep only what `billed` read), a distinct count where none was kept,
    or a percentage charge whose per-event state was not kept (a charge `billed` lacks)."""
    for key, metric in plan.metrics.items():
        old = billed.metrics.get(key)
        if old is None:
            continue  # never recorded under `billed`: its usage is 0
        if (metric.event, metric.field, metric.filter) != (old.event, old.field, old.filter):
            raise UserError(
                f"metrics.{key}",
                f"reads other events than plan {billed.code!r} (event, field or filter differ):"
                " the rollups hold only what that plan read",
            )
        unique = "unique_count" in (metric.aggregation, old.aggregation)
        if unique and metric.aggregation != old.aggregation:
            raise UserError(
                f"metrics.{key}",
                f"is {metric.aggregation} where plan {billed.code!r} has {old.aggregation}:"
                " distinct values are kept only for unique_count",
            )
    for index, charge in enumerate(plan.charges):
        if not isinstance(charge, PercentageCharge):
            continue
        same = index < len(billed.charges) and billed.charges[index] == charge
        if not same and charge.metric in billed.metrics:
            raise UserError(
                f"charges[{index}]",
                f"a percentage charge needs the per-event state that only plan {billed.code!r}'s"
                " own identical charge (same position) keeps in the rollups",
            )


def _unique_counts(plan: Plan, uniques: Mapping[str, set[str]]) -> dict[str, int]:
    return {
        key: len(uniques.get(key, ()))
        for key, metric in plan.metrics.items()
        if metric.aggregation == "unique_count"
    }


def line_amount(draft: InvoiceDraft, kind: str, metric: str | None = None) -> Decimal:
    """The sum of a draft's lines of one kind (and metric)."""
    return sum(
        (line.amount for line in draft.lines if line.kind == kind and line.metric == metric),
        start=Decimal(0),
    )
