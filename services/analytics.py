"""Revenue analytics: revenue, MRR, overage, top customers, near-limit, usage trends.

Invoiced figures come from finalized and paid invoices (`storage.analytics.invoiced`: voids
left out, so a voided and reissued period counts once; adjustments in the month of the invoice
that carries them). Live figures (the current period's estimate, near-limit) come from the
rollups, which ingest writes in the transaction that accepts the events, priced with the
invoice's own code (`services.repricing`). Amounts are grouped by currency, never added across
currencies. Revenue is the invoices' subtotal (before tax); tax and total are shown beside it.
The maths is in `pricing.analytics`; price backtesting is in `services.backtest`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from pricing.analytics import Movements, months, parse_month, share, shift_month
from pricing.errors import UserError, echo
from pricing.money import format_decimal, format_money
from pricing.plans import Plan, included_usage
from services import repricing
from storage.analytics import invoiced
from storage.analytics import usage as usage_store
from storage.catalog.cache import load_contexts

GROUPS = ("plan", "metric", "customer")


def current_month(now: datetime) -> str:
    return f"{now.astimezone(UTC):%Y-%m}"


def last_ended_month(now: datetime) -> str:
    return shift_month(current_month(now), -1)


def revenue(
    first: str, last: str, *, by: str | None = None, now: datetime, estimate: bool = True
) -> dict[str, Any]:
    """Invoiced revenue per month × currency (× group), months first..last; with the current
    period's estimate apart when the range reaches the current month and `estimate`."""
    if by is not None and by not in GROUPS:
        raise UserError("--by", f"must be one of {', '.join(GROUPS)}, got {echo(by)}")
    span = months(first, last)
    rows = invoiced.revenue(first, last, by)
    totals: dict[str, dict[str, Decimal]] = {}
    for row in rows:
        found = totals.setdefault(row.currency, {"revenue": Decimal(0), "tax": Decimal(0)})
        found["revenue"] += row.subtotal
        found["tax"] += row.tax
    document: dict[str, Any] = {
        "from": first,
        "to": last,
        "by": by,
        "months": span,
        "rows": [
            {
                "month": row.month,
                "currency": row.currency,
                **({by: row.group} if by else {}),
                "invoices": row.invoices,
                "revenue": format_money(row.subtotal, row.currency),
                **(
                    {}
                    if by in ("metric", "plan")
                    else {
                        "tax": format_money(row.tax, row.currency),
                        "total": format_money(row.total, row.currency),
                    }
                ),
            }
            for row in rows
        ],
        "totals": [
            {"currency": currency, "revenue": format_money(found["revenue"], currency)}
            for currency, found in sorted(totals.items())
        ],
        "estimate": None,
    }
    if estimate and first <= current_month(now) <= last:
        document["estimate"] = current_estimate(now)
    return document


def current_estimate(now: datetime, customer_ids: Iterable[str] | None = None) -> dict[str, Any]:
    """What the current periods would invoice if they ended now: each customer's period around
    `now` priced from its rollups as its invoice will be (not revenue yet: shown apart)."""
    periods = repricing.periods_at(load_contexts(customer_ids).values(), now)
    usage = repricing.read_usage(periods)
    by_currency: dict[str, dict[str, Any]] = {}
    labels = set()
    for period in periods:
        draft = repricing.as_billed(period, usage, documents=False)
        labels.add(period.period.label)
        found = by_currency.setdefault(
            draft.currency, {"customers": 0, "revenue": Decimal(0), "total": Decimal(0)}
        )
        found["customers"] += 1
        found["revenue"] += draft.subtotal
        found["total"] += draft.total
    return {
        "as_of": now.isoformat(),
        "periods": sorted(labels),
        "currencies": [
            {
                "currency": currency,
                "customers": found["customers"],
                "revenue": format_money(found["revenue"], currency),
                "total": format_money(found["total"], currency),
            }
            for currency, found in sorted(by_currency.items())
        ],
    }


def mrr(month: str, *, count: int = 12, trailing: int = 3) -> dict[str, Any]:
    """MRR and ARR per currency for the `count` months ending with `month`, each with its
    movements since the month before (definitions in `pricing.analytics`, computed in one
    statement by `storage.analytics.invoiced.mrr`)."""
    parse_month(month, "--month")
    if count < 1:
        raise UserError("--months", f"must be at least 1, got {count}")
    if trailing < 1:
        raise UserError("--trailing", f"must be at least 1, got {trailing}")
    series = [shift_month(month, -back) for back in range(count - 1, -1, -1)]
    rows = [
        Movements(
            r.currency,
            r.month,
            r.mrr,
            r.previous,
            r.new,
            r.expansion,
            r.contraction,
            r.churned,
            r.customers,
            r.new_customers,
            r.churned_customers,
        ).rounded()
        for r in invoiced.mrr(series[0], month, trailing)
    ]
    return {
        "month": month,
        "trailing_months": trailing,
        "months": series,
        "rows": [_movement_json(m) for m in rows],
    }


def _movement_json(moved: Movements) -> dict[str, Any]:
    c = moved.currency
    return {
        "month": moved.month,
        "currency": c,
        "customers": moved.customers,
        "mrr": format_money(moved.mrr, c),
        "arr": format_money(moved.arr, c),
        "previous_mrr": format_money(moved.previous, c),
        "new": format_money(moved.new, c),
        "expansion": format_money(moved.expansion, c),
        "contraction": format_money(moved.contraction, c),
        "churned": format_money(moved.churned, c),
        "net": format_money(moved.net, c),
        "new_customers": moved.new_customers,
        "churned_customers": moved.churned_customers,
    }


def overage(first: str, last: str) -> dict[str, Any]:
    """Per currency and metric: the revenue of usage beyond the included allowances (every
    usage line's amount: included units are priced at zero) and its share of all revenue."""
    months(first, last)
    lines, subtotals = invoiced.usage_lines(first, last)
    rows = []
    usage_totals: dict[str, Decimal] = {}
    for line in lines:
        usage_totals[line.currency] = usage_totals.get(line.currency, Decimal(0)) + line.amount
        whole = subtotals.get(line.currency, Decimal(0))
        rows.append(
            {
                "currency": line.currency,
                "metric": line.metric,
                "invoices": line.invoices,
                "quantity": format_decimal(line.quantity),
                "overage_revenue": format_money(line.amount, line.currency),
                "share_percent": _percent(share(line.amount, whole)),
            }
        )
    totals = [
        {
            "currency": currency,
            "revenue": format_money(whole, currency),
            "overage_revenue": format_money(usage_totals.get(currency, Decimal(0)), currency),
            "share_percent": _percent(share(usage_totals.get(currency, Decimal(0)), whole)),
        }
        for currency, whole in sorted(subtotals.items())
    ]
    return {"from": first, "to": last, "rows": rows, "totals": totals}


def top_customers(first: str, last: str, *, top: int = 10, by: str = "revenue") -> dict[str, Any]:
    """The `top` customers of each currency by revenue over first..last, or by growth: the
    change of revenue from the month before `last` to `last`."""
    if by not in ("revenue", "growth"):
        raise UserError("--by", f"must be revenue or growth, got {echo(by)}")
    if top < 1:
        raise UserError("--top", f"must be at least 1, got {top}")
    months(first, last)
    result = [
        {
            "currency": row.currency,
            "rank": row.rank,
            "customer_id": row.customer_id,
            "revenue": format_money(row.revenue, row.currency),
            "last_month": format_money(row.last, row.currency),
            "month_before": format_money(row.before, row.currency),
            "growth": format_money(row.last - row.before, row.currency),
            "growth_percent": _growth_percent(row.before, row.last),
        }
        for row in invoiced.top_customers(first, last, shift_month(last, -1), by=by, top=top)
    ]
    return {"from": first, "to": last, "by": by, "top": top, "rows": result}


def _growth_percent(before: Decimal, after: Decimal) -> str | None:
    if not before:
        return None
    return _percent(share(after - before, before))


def _percent(value: Decimal | None) -> str | None:
    """A percentage with its one decimal kept ("0.0", "23.1")."""
    return None if value is None else format(value, "f")


def hard_limit(plan: Plan, metric: str) -> Decimal | None:
    """The plan's hard limit on `metric` (units per period), if it has one (plan `limits`)."""
    limits = getattr(plan, "limits", None) or {}
    found = limits.get(metric)
    value = getattr(found, "hard_limit", None)
    return Decimal(value) if value is not None else None


@dataclass(frozen=True)
class NearLimit:
    customer_id: str
    metric: str
    plan: str
    used: Decimal
    included: Decimal
    hard_limit: Decimal | None
    share_of_included: Decimal | None
    share_of_limit: Decimal | None

    def to_json(self) -> dict[str, Any]:
        def text(value: Decimal | None) -> str | None:
            return None if value is None else format_decimal(value)

        return {
            "customer_id": self.customer_id,
            "metric": self.metric,
            "plan": self.plan,
            "used": format_decimal(self.used),
            "included": format_decimal(self.included),
            "hard_limit": text(self.hard_limit),
            "included_percent": _percent(self.share_of_included),
            "limit_percent": _percent(self.share_of_limit),
        }


def near_limit(threshold: Decimal, now: datetime) -> dict[str, Any]:
    """Customers whose usage now is at or above `threshold` percent of a metric's included
    allowance or of its hard limit, with their live numbers (the rollups of their current
    segment, as the invoice would read them), highest share first."""
    if not Decimal(0) < threshold <= Decimal(1000):
        raise UserError("--threshold", f"must be a percentage above 0, got {threshold}")
    periods = repricing.periods_at(load_contexts().values(), now)
    usage = repricing.read_usage(periods)
    found: list[NearLimit] = []
    allowances: dict[tuple[int, str], tuple[Decimal, Decimal | None]] = {}
    for period in periods:
        current = repricing.usage_at(period, usage, now)
        if current is None:
            continue
        segment, quantities = current
        for metric, used in quantities.items():
            key = (id(segment.plan), metric)  # the catalog's plans are shared objects
            if key not in allowances:
                allowances[key] = (
                    included_usage(segment.plan, metric),
                    hard_limit(segment.plan, metric),
                )
            row = _near(
                period.customer_id, segment.plan, metric, used.quantity, threshold, allowances[key]
            )
            if row is not None:
                found.append(row)
    found.sort(key=lambda r: (-max(r.share_of_included or 0, r.share_of_limit or 0), r.customer_id))
    return {
        "as_of": now.isoformat(),
        "threshold_percent": format_decimal(threshold),
        "rows": [row.to_json() for row in found],
    }


def _near(
    customer_id: str,
    plan: Plan,
    metric: str,
    used: Decimal,
    threshold: Decimal,
    allowance: tuple[Decimal, Decimal | None] | None = None,
) -> NearLimit | None:
    """The row of `metric` if `used` is at or above `threshold`; `allowance` (the included
    usage and the hard limit of `metric` under `plan`) when the caller knows it already."""
    included, limit = allowance or (included_usage(plan, metric), hard_limit(plan, metric))
    of_included = share(used, included) if included else None
    of_limit = share(used, limit) if limit else None
    if max(of_included or 0, of_limit or 0) < threshold:
        return None
    return NearLimit(customer_id, metric, plan.code, used, included, limit, of_included, of_limit)


def usage_trend(
    metric: str, first: date, last: date, customer_id: str | None = None
) -> dict[str, Any]:
    """Daily usage of `metric` first..last (each customer's local days), from the daily
    rollups: events and the sum of their values per day, days without usage as zeros."""
    if last < first:
        raise UserError("--to", f"{last} is before --from {first}")
    if (last - first).days > 3660:
        raise UserError("--to", "at most 10 years of days at once")
    days = {d.day: d for d in usage_store.daily(metric, first, last, customer_id)}
    if not days and not usage_store.metric_known(metric):
        raise UserError("--metric", f"no usage of {echo(metric)} has ever been recorded")
    rows = []
    day = first
    while day <= last:
        found = days.get(day)
        rows.append(
            {
                "day": day.isoformat(),
                "events": found.events if found else 0,
                "total": format_decimal(found.total) if found else "0",
                "customers": found.customers if found else 0,
            }
        )
        day += timedelta(days=1)
    total = sum((d.total for d in days.values()), start=Decimal(0))
    return {
        "metric": metric,
        "customer_id": customer_id,
        "from": first.isoformat(),
        "to": last.isoformat(),
        "rows": rows,
        "total": format_decimal(total),
        "events": sum(d.events for d in days.values()),
    }
