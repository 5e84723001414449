"""Invoice composition: the segments of a billing period, priced, into one invoice.

A period is priced segment by segment (the part spent under each plan), each with its own plan's
tiers on its own usage, and its base fee and minimum spend prorated by local days: the day of a
change belongs to the new plan. Late usage for a period whose invoice is final becomes
adjustment lines on a later invoice: the earlier period re-rated from the current rollups, minus
what was billed for it, line by line. Pure: storage reads the rollups and the earlier invoices.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from pricing.charges import ChargeResult, MetricUsage
from pricing.errors import UserError
from pricing.metering import Segment
from pricing.money import exact_arithmetic, format_decimal, format_money, round_money
from pricing.periods import Period, days_in_period, local_date
from pricing.rating import Line, rate

#: What a line prices: (segment start, kind, metric, model). Adjustments compare by it.
LineKey = tuple[datetime, str, str | None, str | None]


def version_key(segment_start: datetime) -> str:
    """How a segment is named in `rollup_versions`: its start, in UTC, ISO 8601."""
    return segment_start.astimezone(UTC).isoformat()


@dataclass(frozen=True)
class PricedSegment:
    """A segment with the usage read from its rollups (at `rollup_version`)."""

    segment: Segment
    usage: Mapping[str, MetricUsage]
    charge_results: Mapping[int, ChargeResult]
    rollup_version: int


@dataclass(frozen=True)
class InvoiceLine:
    """One invoice line: its JSON (the CONTRACTS.md line shape plus invoice fields), and what
    tax and adjustments need to know about it. `amount` is rounded to the minor unit."""

    kind: str
    amount: Decimal
    tax_rate: Decimal
    segment_start: datetime
    document: Mapping[str, Any]
    metric: str | None = None
    model: str | None = None
    quantity: Decimal | None = None
    for_period_start: datetime | None = None
    adjusts: str | None = None

    @property
    def key(self) -> LineKey:
        return (self.segment_start, self.adjusts or self.kind, self.metric, self.model)


@dataclass(frozen=True)
class BilledLine:
    """What was billed for one line of an earlier period: on its own invoice, or as an
    adjustment on a later one (then `kind` is the kind it adjusted)."""

    segment_start: datetime
    kind: str
    metric: str | None
    model: str | None
    quantity: Decimal
    amount: Decimal

    @property
    def key(self) -> LineKey:
        return (self.segment_start, self.kind, self.metric, self.model)


@dataclass(frozen=True)
class InvoiceDraft:
    """A composed invoice, before storage gives it an id, a status and a number."""

    customer_id: str
    period: Period
    currency: str
    segments: tuple[PricedSegment, ...]
    lines: tuple[InvoiceLine, ...]
    subtotal: Decimal
    tax: Decimal
    total: Decimal
    rollup_versions: Mapping[str, int] = field(default_factory=dict)

    @property
    def plan_code(self) -> str:
        """The plan of the last segment: the one the period ended under."""
        return self.segments[-1].segment.plan.code

    @property
    def plan_version(self) -> int:
        return self.segments[-1].segment.plan_version

    def to_json(self) -> dict[str, Any]:
        """The `meter quote --json` shape for the whole period, plus the period and the
        segments. `usage` sums each metric over the segments (what the usage lines priced);
        `segments[].usage` has each plan's own quantities."""
        usage: dict[str, Decimal] = {}
        for priced in self.segments:
            for metric, metric_usage in priced.usage.items():
                usage[metric] = usage.get(metric, Decimal(0)) + metric_usage.quantity
        return {
            "plan": self.plan_code,
            "plan_version": self.plan_version,
            "currency": self.currency,
            "period": self.period.label,
            "timezone": self.period.timezone,
            "usage": {metric: format_decimal(qty) for metric, qty in usage.items()},
            "lines": [dict(line.document) for line in self.lines],
            "subtotal": format_money(self.subtotal, self.currency),
            "tax": format_money(self.tax, self.currency),
            "total": format_money(self.total, self.currency),
            "segments": [_segment_json(priced) for priced in self.segments],
            "rollup_versions": dict(self.rollup_versions),
        }


def segment_days(segment: Segment) -> tuple[int, int]:
    """(local days of the segment, local days of its billing period), in the segment's zone."""
    days = local_date(segment.end, segment.timezone) - local_date(segment.start, segment.timezone)
    return days.days, days_in_period(segment.period, segment.timezone)


def prorate(amount: Decimal, days: int, period_days: int, currency: str) -> Decimal:
    """`amount` × days / period_days, rounded half-up once. Multiplying before dividing keeps
    a result that is exactly half a minor unit (0.15 × 1/30 = 0.005) exact, so it rounds up."""
    if days >= period_days:
        return round_money(amount, currency)
    with exact_arithmetic():
        return round_money(amount * days / period_days, currency)


def price_segment(
    priced: PricedSegment, *, name_plan: bool = False, documents: bool = True
) -> list[InvoiceLine]:
    """The lines of one segment: base fee (prorated), one usage line per charge, minimum
    true-up (minimum prorated). `name_plan` labels each line with its plan (several segments).
    Without `documents` the lines' documents are left empty (the amounts are the same): for
    reports that want the totals of thousands of customers, not what each line says."""
    segment = priced.segment
    plan = segment.plan
    currency = plan.currency
    days, period_days = segment_days(segment)
    quote = rate(plan, priced.usage, charge_results=priced.charge_results)
    lines = [Line("base_fee", prorate(plan.base_fee, days, period_days, currency))]
    lines += [line for line in quote.lines if line.kind == "usage"]
    if plan.minimum_spend is not None:
        minimum = prorate(plan.minimum_spend, days, period_days, currency)
        with exact_arithmetic():
            spent = sum((line.amount for line in lines), start=Decimal(0))
        lines.append(
            Line("minimum_true_up", round_money(max(minimum - spent, Decimal(0)), currency))
        )
    extra: dict[str, Any] = {}
    if name_plan:
        extra = {"plan": plan.code, "plan_version": segment.plan_version}
    result = []
    for line in lines:
        document: dict[str, Any] = {}
        if documents:
            document = {**line.to_json(), **extra}
            if line.kind != "usage" and days < period_days:
                document["proration"] = {"days": days, "period_days": period_days}
        result.append(
            InvoiceLine(
                kind=line.kind,
                amount=line.amount,
                tax_rate=plan.tax_rate,
                segment_start=segment.start,
                document=_amount_last(document) if documents else document,
                metric=line.metric,
                model=line.model,
                quantity=line.quantity,
            )
        )
    return result


def adjustment_lines(
    period: Period,
    rerated: Sequence[InvoiceLine],
    billed: Iterable[BilledLine],
    *,
    history_changed: bool = False,
) -> list[InvoiceLine]:
    """Lines that bill what an earlier `period` comes to now (`rerated`, from the current
    rollups) minus what was billed for it, key by key; a line whose amount and quantity are
    both unchanged gives nothing. Each is taxed at the rate of the plan that priced it.
    `history_changed`: the period's plans changed since it was billed (a backdated plan change
    or cancellation), which the descriptions say rather than "late usage"."""
    now = _sum_by_key(rerated)
    then = _sum_by_key(billed)
    first: dict[LineKey, InvoiceLine] = {}
    for line in rerated:
        first.setdefault(line.key, line)
    rates = {line.segment_start: line.tax_rate for line in rerated}
    result: list[InvoiceLine] = []
    for key in [*now, *(k for k in then if k not in now)]:
        current = first.get(key)
        quantity_now, amount_now = now.get(key, (Decimal(0), Decimal(0)))
        quantity_then, amount_then = then.get(key, (Decimal(0), Decimal(0)))
        with exact_arithmetic():
            quantity = quantity_now - quantity_then
            amount = amount_now - amount_then
        if not amount and not quantity:
            continue
        segment_start, kind, metric, model = key
        document: dict[str, Any] = {
            "kind": "adjustment",
            "adjusts": kind,
            "for_period": period.label,
            "for_period_start": period.start.isoformat(),
            "description": _describe(period, kind, metric, history_changed),
        }
        if metric is not None:
            document["metric"] = metric
        if model is not None:
            document["model"] = model
        if current is not None and "plan" in current.document:
            document["plan"] = current.document["plan"]
        if kind == "usage":
            document["quantity"] = format_decimal(quantity)
        document["amount"] = format(amount, "f")
        result.append(
            InvoiceLine(
                kind="adjustment",
                amount=amount,
                tax_rate=current.tax_rate if current else rates.get(segment_start, Decimal(0)),
                segment_start=segment_start,
                document=document,
                metric=metric,
                model=model,
                quantity=quantity if kind == "usage" else None,
                for_period_start=period.start,
                adjusts=kind,
            )
        )
    return result


def compose(
    customer_id: str,
    period: Period,
    segments: Sequence[PricedSegment],
    adjustments: Sequence[InvoiceLine] = (),
    rerated_versions: Mapping[str, int] | None = None,
    *,
    documents: bool = True,
) -> InvoiceDraft:
    """The invoice of `period`: each segment's lines, then the adjustments for earlier periods.

    Subtotal is the sum of the rounded lines; tax is computed per tax rate (lines priced under
    plans with different rates) on the sum of that rate's lines, rounded once per rate.
    `rerated_versions` are the rollup versions of earlier segments the adjustments priced.
    Without `documents`, the lines carry no document (`price_segment`).
    """
    if not segments:
        raise UserError(
            "customer_id", f"{customer_id!r} has no plan in force in period {period.label}"
        )
    currencies = {priced.segment.plan.currency for priced in segments}
    if len(currencies) > 1:
        raise UserError(
            "customer_id",
            f"{customer_id!r}: period {period.label} mixes currencies "
            f"{', '.join(sorted(currencies))}; one invoice has one currency",
        )
    currency = currencies.pop()
    name_plan = len(segments) > 1
    lines = [
        line
        for priced in segments
        for line in price_segment(priced, name_plan=name_plan, documents=documents)
    ]
    lines += adjustments
    with exact_arithmetic():
        subtotal = round_money(sum((line.amount for line in lines), start=Decimal(0)), currency)
        by_rate: dict[Decimal, Decimal] = {}
        for line in lines:
            by_rate[line.tax_rate] = by_rate.get(line.tax_rate, Decimal(0)) + line.amount
        tax = sum(
            (round_money(amount * tax_rate, currency) for tax_rate, amount in by_rate.items()),
            start=Decimal(0),
        )
        total = subtotal + tax
    versions = {version_key(p.segment.start): p.rollup_version for p in segments}
    versions.update(rerated_versions or {})
    return InvoiceDraft(
        customer_id=customer_id,
        period=period,
        currency=currency,
        segments=tuple(segments),
        lines=tuple(lines),
        subtotal=subtotal,
        tax=round_money(tax, currency),
        total=round_money(total, currency),
        rollup_versions=versions,
    )


#: Key order of invoice JSON as composed (jsonb stores keys in its own order); other keys, such
#: as metric names, follow alphabetically.
_KEY_ORDER = {
    key: rank
    for rank, key in enumerate(
        (
            *("kind", "adjusts", "for_period", "for_period_start", "description", "plan"),
            *("plan_version", "metric", "model", "name", "start", "end", "days", "period_days"),
            *("rollup_version", "tier", "quantity", "included", "billable", "unit_amount"),
            *("flat_amount", "rate_percent", "tiers", "details", "proration", "usage", "amount"),
        )
    )
}


def readable(value: Any) -> Any:
    """An invoice document with its keys back in composition order (jsonb keeps its own)."""
    if isinstance(value, dict):
        keys = sorted(value, key=lambda k: (_KEY_ORDER.get(k, len(_KEY_ORDER)), k))
        return {key: readable(value[key]) for key in keys}
    if isinstance(value, list):
        return [readable(item) for item in value]
    return value


def _sum_by_key(
    lines: Iterable[InvoiceLine | BilledLine],
) -> dict[LineKey, tuple[Decimal, Decimal]]:
    """(quantity, amount) per line key; several charges on one metric add up."""
    sums: dict[LineKey, tuple[Decimal, Decimal]] = {}
    with exact_arithmetic():
        for line in lines:
            quantity, amount = sums.get(line.key, (Decimal(0), Decimal(0)))
            sums[line.key] = (quantity + (line.quantity or Decimal(0)), amount + line.amount)
    return sums


def _segment_json(priced: PricedSegment) -> dict[str, Any]:
    segment = priced.segment
    days, period_days = segment_days(segment)
    return {
        "plan": segment.plan.code,
        "plan_version": segment.plan_version,
        "start": segment.start.isoformat(),
        "end": segment.end.isoformat(),
        "days": days,
        "period_days": period_days,
        "rollup_version": priced.rollup_version,
        "usage": {metric: format_decimal(u.quantity) for metric, u in priced.usage.items()},
    }


def _amount_last(document: Mapping[str, Any]) -> dict[str, Any]:
    """The line with `amount` as its last key, as in `meter quote --json`."""
    ordered = {key: value for key, value in document.items() if key != "amount"}
    ordered["amount"] = document["amount"]
    return ordered


def _describe(period: Period, kind: str, metric: str | None, history_changed: bool) -> str:
    what = {
        "usage": f"{'usage' if history_changed else 'late usage'} of {metric}",
        "base_fee": "base fee",
        "minimum_true_up": "minimum spend true-up",
    }.get(kind, kind)
    if history_changed:
        return f"Adjustment for {period.label}: {what}, re-rated after a change of plan history"
    return f"Adjustment for {period.label}: {what}"
