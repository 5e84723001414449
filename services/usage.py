"""Current usage and the estimated bill of a customer, from the Redis counters.

No SQL on this path when the counters are there: the customer context comes from the in-process
catalog and the counters from one pipelined Redis round trip. Counters that are missing (Redis
restarted or flushed) or left with a stale gap are rebuilt from the PostgreSQL rollups on the
spot, so the answer is right either way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from pricing.aggregations import LEVEL_AGGREGATIONS, MetricState
from pricing.errors import echo
from pricing.invoicing import PricedSegment, compose, segment_days
from pricing.metering import Segment, SegmentState, carried_levels, segment_usage
from pricing.money import format_decimal, format_money
from pricing.plans import included_usage
from pricing.rating import Quote, rate
from storage.catalog.cache import CustomerContext, catalog
from storage.errors import NotFound
from storage.usage import counters, rollups


@dataclass(frozen=True)
class MetricReport:
    used: Decimal
    included: Decimal
    overage: Decimal
    estimated_cost: Decimal


@dataclass(frozen=True)
class UsageReport:
    """The current segment's usage and estimated bill. The rows add up: the metrics'
    estimated costs + `base_fee` + `minimum_true_up` = `subtotal`; `subtotal` + `tax` =
    `estimated_total` (base fee and minimum prorated as this segment's invoice has them)."""

    customer_id: str
    segment: Segment
    metrics: dict[str, MetricReport]
    quote: Quote
    estimated_total: Decimal
    as_of: datetime
    version: int
    base_fee: Decimal = Decimal(0)
    minimum_true_up: Decimal = Decimal(0)
    subtotal: Decimal = Decimal(0)
    tax: Decimal = Decimal(0)
    proration: tuple[int, int] | None = None  # (days, period days) when the segment is partial

    def to_json(self) -> dict[str, Any]:
        currency = self.segment.plan.currency
        extra: dict[str, Any] = {}
        if self.proration is not None:
            extra["proration"] = {"days": self.proration[0], "period_days": self.proration[1]}
        return {
            "customer_id": self.customer_id,
            "plan": self.segment.plan.code,
            "currency": currency,
            "period_start": self.segment.period.start.isoformat(),
            "period_end": self.segment.period.end.isoformat(),
            "timezone": self.segment.timezone,
            "metrics": {
                name: {
                    "used": format_decimal(m.used),
                    "included": format_decimal(m.included),
                    "overage": format_decimal(m.overage),
                    "estimated_cost": format_money(m.estimated_cost, currency),
                }
                for name, m in self.metrics.items()
            },
            "base_fee": format_money(self.base_fee, currency),
            "minimum_true_up": format_money(self.minimum_true_up, currency),
            "subtotal": format_money(self.subtotal, currency),
            "tax_rate": format_decimal(self.segment.plan.tax_rate),
            "tax": format_money(self.tax, currency),
            **extra,
            "estimated_total": format_money(self.estimated_total, currency),
            "as_of": self.as_of.isoformat(timespec="milliseconds"),
        }


def _unique_metrics(segment: Segment) -> list[str]:
    return [k for k, m in segment.plan.metrics.items() if m.aggregation == "unique_count"]


def segments_counters(
    segments: Sequence[tuple[str, Segment]],
) -> list[tuple[int, SegmentState, dict[str, int]]]:
    """`segment_counters` of many (customer, segment): one Redis round trip for all, and a
    rebuild from the rollups only for those that need one."""
    live = counters.read_segments(
        [(customer, segment.start, _unique_metrics(segment)) for customer, segment in segments]
    )
    return [
        (found.version, found.state, found.unique_counts)
        if found is not None
        else segment_counters(customer_id, segment)
        for (customer_id, segment), found in zip(segments, live, strict=True)
    ]


def segment_counters(
    customer_id: str, segment: Segment
) -> tuple[int, SegmentState, dict[str, int]]:
    """The live state of a segment: from Redis, rebuilt from the rollups when needed."""
    unique_metrics = _unique_metrics(segment)
    live = counters.read_segment(customer_id, segment.start, unique_metrics)
    if live is None:
        snap = rollups.snapshot(customer_id, segment.start)
        counters.load_segment(
            customer_id, segment.start, segment.end, snap.version, snap.state, snap.uniques
        )
        live = counters.read_segment(customer_id, segment.start, unique_metrics)
        if live is None:  # still gapped (a batch in flight): answer from the snapshot itself
            counts = {m: len(snap.uniques.get(m, ())) for m in unique_metrics}
            return snap.version, snap.state, counts
    return live.version, live.state, live.unique_counts


def carried_in(
    customer_id: str, context: CustomerContext, segment: Segment
) -> dict[str, MetricState]:
    """The levels a segment starts from, left by the earlier segments of its period (a plan
    change), from their counters: what the invoice derives from their rollups. Costs nothing
    for a segment that begins its period or whose plan has no level-type metric."""
    if segment.start <= segment.period.start or not any(
        metric.aggregation in LEVEL_AGGREGATIONS for metric in segment.plan.metrics.values()
    ):
        return {}
    chain = [
        (earlier, segment_counters(customer_id, earlier)[1])
        for earlier in catalog.segments(context, segment.period)
        if earlier.start < segment.start
    ]
    return carried_levels([*chain, (segment, SegmentState())])[-1]


def current_usage(customer_id: str, at: datetime | None = None) -> UsageReport:
    at = at or datetime.now(UTC)
    context = catalog.customers({customer_id}).get(customer_id)
    if context is None:
        raise NotFound(f"customer_id: no customer {echo(customer_id)}")
    segment = catalog.segment(context, at)
    if segment is None:
        raise NotFound(f"customer {customer_id!r} has no plan at {at.isoformat()}")
    return segment_report(context, segment, at)


def segment_report(
    context: CustomerContext,
    segment: Segment,
    at: datetime,
    live: tuple[int, SegmentState, dict[str, int]] | None = None,
) -> UsageReport:
    """A segment's usage and estimated bill as of `at`, from `live` (version, state, unique
    counts) when the caller has just read the counters, else from `segment_counters`."""
    customer_id = context.customer_id
    version, state, unique_counts = live or segment_counters(customer_id, segment)
    carried = carried_in(customer_id, context, segment)
    usage, charge_results = segment_usage(segment.plan, state, unique_counts, segment, carried)
    quote = rate(segment.plan, usage, charge_results=charge_results)
    # The total as this segment's invoice would have it (base fee and minimum prorated).
    draft = compose(
        customer_id, segment.period, [PricedSegment(segment, usage, charge_results, version)]
    )
    # Every amount below comes from the draft's rounded lines, so the rows add up to its total.
    amounts: dict[tuple[str, str | None], Decimal] = {}
    for line in draft.lines:
        key = (line.kind, line.metric)
        amounts[key] = amounts.get(key, Decimal(0)) + line.amount
    metrics: dict[str, MetricReport] = {}
    for name in segment.plan.metrics:
        used = usage[name].quantity if name in usage else Decimal(0)
        included = included_usage(segment.plan, name)
        cost = amounts.get(("usage", name), Decimal(0))
        metrics[name] = MetricReport(used, included, max(used - included, Decimal(0)), cost)
    days, period_days = segment_days(segment)
    return UsageReport(
        customer_id,
        segment,
        metrics,
        quote,
        draft.total,
        at,
        version,
        base_fee=amounts.get(("base_fee", None), Decimal(0)),
        minimum_true_up=amounts.get(("minimum_true_up", None), Decimal(0)),
        subtotal=draft.subtotal,
        tax=draft.tax,
        proration=(days, period_days) if days < period_days else None,
    )
