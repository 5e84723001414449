"""`check_limit`: may this customer use more of a metric? Answered from the live counters.

For gating in the request path ("you have used your included calls"): one Redis round trip
when the counters are warm, no SQL.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from services.usage import current_usage
from storage.errors import NotFound


@dataclass(frozen=True)
class LimitCheck:
    customer_id: str
    metric: str
    used: Decimal
    included: Decimal
    remaining: Decimal  # included units left (0 once exceeded)

    @property
    def exceeded(self) -> bool:
        return self.used >= self.included


def check_limit(customer_id: str, metric: str) -> LimitCheck:
    """The metric's usage this period against its included units (KeyError naming the metric
    when the customer's plan has no such metric)."""
    report = current_usage(customer_id)
    if metric not in report.metrics:
        raise NotFound(f"metric: {metric!r} is not a metric of plan {report.segment.plan.code!r}")
    m = report.metrics[metric]
    return LimitCheck(customer_id, metric, m.used, m.included, max(m.included - m.used, Decimal(0)))
