"""Report maths for the revenue analytics, pure: months, MRR and its movements, shares.

MRR (monthly recurring revenue) of a customer in month M, from its finalized invoices:
its base fees invoiced for M, plus its trailing usage revenue: the mean, over the months of the
trailing window (M and the `trailing - 1` months before it) in which it was invoiced, of
everything else it was invoiced (usage, minimum true-ups, adjustments). A customer not invoiced
for M has no MRR in M. A yearly invoice counts one twelfth in each month of its year. ARR is
12 × MRR. Between two months each customer's change is one movement: new (no MRR before),
churned (no MRR after), expansion (more) or contraction (less); they add up to the change of
MRR. Amounts of different currencies are never added: everything is per currency.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal

from pricing.errors import UserError, echo
from pricing.money import round_money

_MONTH = re.compile(r"(\d{4})-(\d{2})")


def parse_month(text: str, field_name: str) -> tuple[int, int]:
    """(year, month) of 'YYYY-MM'; UserError naming the field otherwise."""
    match = _MONTH.fullmatch(text)
    if not match or not 1 <= int(match.group(2)) <= 12:
        raise UserError(field_name, f"expected a month YYYY-MM, got {echo(text)}")
    return int(match.group(1)), int(match.group(2))


def shift_month(month: str, count: int) -> str:
    """'2026-01' shifted by `count` months."""
    year, number = parse_month(month, "month")
    index = year * 12 + number - 1 + count
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


def months(first: str, last: str) -> list[str]:
    """Every month first..last, inclusive; UserError when last is before first."""
    parse_month(first, "--from")
    parse_month(last, "--to")
    if last < first:
        raise UserError("--to", f"{last} is before --from {first}")
    found = [first]
    while found[-1] < last:
        found.append(shift_month(found[-1], 1))
    return found


@dataclass(frozen=True)
class Invoiced:
    """A customer's invoiced amounts of one month in one currency (see `CustomerMonth`)."""

    customer_id: str
    month: str
    currency: str
    recurring: Decimal
    usage: Decimal
    months: int = 1


def spread(rows: Iterable[Invoiced]) -> dict[tuple[str, str, str], tuple[Decimal, Decimal]]:
    """(customer, currency, month) -> (recurring, usage) per month, a yearly invoice's amounts
    spread evenly over the 12 months from its own."""
    found: dict[tuple[str, str, str], tuple[Decimal, Decimal]] = {}
    for row in rows:
        for offset in range(row.months):
            key = (row.customer_id, row.currency, shift_month(row.month, offset))
            recurring, usage = found.get(key, (Decimal(0), Decimal(0)))
            found[key] = (recurring + row.recurring / row.months, usage + row.usage / row.months)
    return found


def mrr_by_customer(
    rows: Iterable[Invoiced], month: str, trailing: int = 3
) -> dict[tuple[str, str], Decimal]:
    """(customer, currency) -> MRR in `month` (module docstring), unrounded."""
    if trailing < 1:
        raise UserError("--trailing", f"must be at least 1, got {trailing}")
    window = [shift_month(month, -back) for back in range(trailing)]
    per_month = spread(rows)
    mrr: dict[tuple[str, str], Decimal] = {}
    seen: dict[tuple[str, str], list[Decimal]] = {}
    for (customer, currency, at), (recurring, usage) in per_month.items():
        if at == month:
            mrr[(customer, currency)] = recurring
        if at in window:
            seen.setdefault((customer, currency), []).append(usage)
    for key in mrr:
        usages = seen.get(key, [])
        mrr[key] += sum(usages, start=Decimal(0)) / len(usages) if usages else Decimal(0)
    return mrr


@dataclass
class Movements:
    """MRR of one currency in a month, and how it moved since the month before."""

    currency: str
    month: str
    mrr: Decimal = Decimal(0)
    previous: Decimal = Decimal(0)
    new: Decimal = Decimal(0)
    expansion: Decimal = Decimal(0)
    contraction: Decimal = Decimal(0)
    churned: Decimal = Decimal(0)
    customers: int = 0
    new_customers: list[str] = field(default_factory=list)
    churned_customers: list[str] = field(default_factory=list)

    @property
    def arr(self) -> Decimal:
        return self.mrr * 12

    @property
    def net(self) -> Decimal:
        return self.new + self.expansion - self.contraction - self.churned

    def rounded(self) -> Movements:
        """Every amount rounded to the currency's minor unit (half-up), once."""
        c = self.currency
        return Movements(
            c,
            self.month,
            round_money(self.mrr, c),
            round_money(self.previous, c),
            round_money(self.new, c),
            round_money(self.expansion, c),
            round_money(self.contraction, c),
            round_money(self.churned, c),
            self.customers,
            self.new_customers,
            self.churned_customers,
        )


def movements(
    before: Mapping[tuple[str, str], Decimal], after: Mapping[tuple[str, str], Decimal], month: str
) -> dict[str, Movements]:
    """Per currency: MRR after, before, and the movements between (customer by customer)."""
    result: dict[str, Movements] = {}
    for key in sorted({*before, *after}):
        customer, currency = key
        found = result.setdefault(currency, Movements(currency, month))
        old, new = before.get(key, Decimal(0)), after.get(key, Decimal(0))
        found.previous += old
        found.mrr += new
        if new > 0:
            found.customers += 1
        if old <= 0 < new:
            found.new += new
            found.new_customers.append(customer)
        elif new <= 0 < old:
            found.churned += old
            found.churned_customers.append(customer)
        elif new > old:
            found.expansion += new - old
        elif new < old:
            found.contraction += old - new
    return result


def share(part: Decimal, whole: Decimal) -> Decimal:
    """part / whole as a percentage with one decimal (0 when whole is 0)."""
    if not whole:
        return Decimal(0)
    return (part * 100 / whole).quantize(Decimal("0.1"))
