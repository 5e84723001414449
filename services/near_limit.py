"""Customers near their included usage: for the ops dashboard.

A metric is near its limit when its live usage this period has reached `share` of its
included units (0.8 by default: the first alert threshold). Read from the live counters, one
customer at a time, so it suits hundreds of customers, not a scan of millions.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from services.customers import list_customers
from services.usage import current_usage
from storage.errors import NotFound

DEFAULT_SHARE = Decimal("0.8")


@dataclass(frozen=True)
class NearLimit:
    customer_id: str
    metric: str
    used: Decimal
    included: Decimal

    @property
    def share(self) -> Decimal:
        return self.used / self.included


def near_limit(share: Decimal = DEFAULT_SHARE, *, limit: int = 50) -> list[NearLimit]:
    """Metrics at or past `share` of their included units, the fullest first (at most
    `limit`). Customers with no plan in force now are left out."""
    found: list[NearLimit] = []
    for customer in list_customers():
        try:
            report = current_usage(customer.id)
        except NotFound:
            continue
        for metric, m in report.metrics.items():
            if m.included > 0 and m.used >= share * m.included:
                found.append(NearLimit(customer.id, metric, m.used, m.included))
    found.sort(key=lambda n: n.share, reverse=True)
    return found[:limit]
