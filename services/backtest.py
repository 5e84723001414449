"""Price backtesting: what a period's real usage would have been billed under another plan.

Every customer billed by that period's interval is priced twice from the same rollups with the
invoice's own code (`services.repricing`): as billed (each segment under its own plan, which is
what its invoice holds) and under the candidate plan for the whole of its period. Nothing is
written: the rollups are read in one READ ONLY transaction (PostgreSQL refuses any write in
it), the candidate plan is never stored, and no counter, invoice or job is touched.

"billed" is the customer's live invoice for the period (finalized, paid or still a draft), less
any adjustment lines it carries for earlier periods; a customer with no invoice yet shows the
period priced as its invoice would be ("estimated"). Amounts are subtotals (before tax), in the
customer's currency; a candidate plan in another currency is refused for those customers.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from pricing.errors import UserError, echo
from pricing.money import format_money
from pricing.plans import Plan
from services import repricing
from storage.analytics import invoiced
from storage.catalog.cache import load_contexts


def _check_interval(plan: Plan, label: str) -> None:
    interval = "month" if "-" in label else "year"
    if plan.interval != interval:
        raise UserError(
            "--plan",
            f"plan {plan.code!r} bills by the {plan.interval}; period {echo(label)} is a"
            f" {interval}",
        )


def backtest(
    plan: Plan, label: str, *, now: datetime, customer_ids: Sequence[str] | None = None
) -> dict[str, Any]:
    """Per customer and per currency: billed, would-have-been under `plan`, difference."""
    _check_interval(plan, label)
    contexts = load_contexts(customer_ids)
    missing = sorted(set(customer_ids or ()) - set(contexts))
    if missing:
        raise UserError("--customer", f"no customer {echo(missing[0])}")
    periods, skipped = repricing.periods_for_label(contexts.values(), label, now)
    usage = repricing.read_usage(periods)
    bills = invoiced.billed(label, list(customer_ids) if customer_ids else None)
    rows: list[dict[str, Any]] = []
    totals: dict[str, tuple[int, Decimal, Decimal]] = {}
    for period in sorted(periods, key=lambda p: p.customer_id):
        bill = bills.get(period.customer_id)
        if bill is not None:
            currency, billed = bill["currency"], bill["own"]
        else:  # not invoiced yet: priced as its invoice will be
            as_billed = repricing.as_billed(period, usage, documents=False)
            currency, billed = as_billed.currency, as_billed.subtotal
        if currency != plan.currency:
            skipped[period.customer_id] = (
                f"billed in {currency}, plan {plan.code!r} is in {plan.currency}"
            )
            continue
        candidate = repricing.under_plan(plan, period, usage, documents=False)
        difference = candidate.subtotal - billed
        rows.append(
            {
                "customer_id": period.customer_id,
                "plans": sorted({s.plan.code for s in period.segments}),
                "invoice_id": bill["invoice_id"] if bill else None,
                "status": bill["status"] if bill else "estimated",
                "currency": currency,
                "billed": format_money(billed, currency),
                "backtest": format_money(candidate.subtotal, currency),
                "difference": format_money(difference, currency),
                "backtest_tax": format_money(candidate.tax, currency),
                "backtest_total": format_money(candidate.total, currency),
            }
        )
        count, billed_sum, backtest_sum = totals.get(currency, (0, Decimal(0), Decimal(0)))
        totals[currency] = (count + 1, billed_sum + billed, backtest_sum + candidate.subtotal)
    return {
        "plan": plan.code,
        "period": label,
        "rows": rows,
        "totals": _totals_document(totals),
        "skipped": [{"customer_id": c, "reason": r} for c, r in sorted(skipped.items())],
    }


def _totals_document(totals: dict[str, tuple[int, Decimal, Decimal]]) -> list[dict[str, Any]]:
    """One row per currency: customers, billed, backtest and the difference."""
    return [
        {
            "currency": currency,
            "customers": count,
            "billed": format_money(billed, currency),
            "backtest": format_money(backtest_sum, currency),
            "difference": format_money(backtest_sum - billed, currency),
        }
        for currency, (count, billed, backtest_sum) in sorted(totals.items())
    ]
