"""What an alert needs priced: each metric's used quantity and the segment's estimated bill,
amounts only.

`meter usage` builds a whole report (the quote, the draft invoice's lines) to show the bill;
an alert's payload and the spend rules need only its total. `pricing.estimate.estimate_total`
gives the same total `compose` gives for the segment alone (a test holds the two equal), and
with the customer's `ChargeMemo` (`services.limits.charge_memo`, the one `check_limit`'s spend
cap uses) a charge whose usage has not changed since the customer's previous estimate is not
priced again.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from pricing.estimate import estimate_total
from pricing.metering import Segment, SegmentState, segment_usage
from services.limits import charge_memo
from services.usage import carried_in
from storage.catalog.cache import CustomerContext


@dataclass(frozen=True)
class Estimate:
    """A segment's usage per metric and its estimated bill (as `meter usage` shows them)."""

    segment: Segment
    used: dict[str, Decimal]
    estimated_total: Decimal


def estimate(
    context: CustomerContext,
    segment: Segment,
    live: tuple[int, SegmentState, dict[str, int]],
) -> Estimate:
    """The segment's used quantities and estimated bill from its counters (`live`: version,
    state, unique counts, as `services.usage.segments_counters` reads them)."""
    customer_id = context.customer_id
    _, state, unique_counts = live
    carried = carried_in(customer_id, context, segment)
    usage, results = segment_usage(segment.plan, state, unique_counts, segment, carried)
    total = estimate_total(segment, usage, results, charge_memo(customer_id, segment))
    return Estimate(segment, {name: u.quantity for name, u in usage.items()}, total)
