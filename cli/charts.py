"""Charts of the analytics reports, drawn with matplotlib's Agg backend (headless: no display,
no GUI toolkit) into PNG files. Each takes the report's JSON document, so a chart shows exactly
what `--json` prints. One panel per currency: amounts of different currencies are never drawn
on one axis.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

from cli.output import CliError

_COLORS = ["#2b6cb0", "#dd6b20", "#38a169", "#805ad5", "#d53f8c", "#319795", "#718096"]
_MOVES = {"new": "#38a169", "expansion": "#9ae6b4", "contraction": "#fbb6ce", "churned": "#e53e3e"}
#: Groups drawn on their own in a stacked revenue chart; the rest are summed as "other".
_MAX_GROUPS = 6


def check_path(path: Path, option: str = "--chart") -> None:
    """A chart goes to a .png file in a folder that exists."""
    if path.suffix.lower() != ".png":
        raise CliError(f"{option}: the chart is a PNG: give a file name ending in .png, got {path}")
    if not path.parent.exists():
        raise CliError(f"{option}: no folder {path.parent}")


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _money_axis(axis: Any, currency: str) -> None:
    from matplotlib.ticker import FuncFormatter

    axis.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    axis.set_ylabel(f"{currency} (before tax)")
    axis.grid(axis="y", color="#e2e8f0")
    axis.set_axisbelow(True)
    for side in ("top", "right"):
        axis.spines[side].set_visible(False)


def _figure(panels: int, title: str, height: float = 4.2) -> tuple[Any, list[Any]]:
    plt = _pyplot()
    fig, axes = plt.subplots(panels, 1, figsize=(11, height * panels + 0.6), squeeze=False)
    fig.suptitle(title, fontsize=14, fontweight="bold")
    return fig, [row[0] for row in axes]


def _save(fig: Any, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    _pyplot().close(fig)


def _currencies(document: dict[str, Any], extra: Sequence[str] = ()) -> list[str]:
    return sorted({row["currency"] for row in document["rows"]} | set(extra))


def revenue_chart(document: dict[str, Any], path: Path) -> None:
    """Invoiced revenue per month as bars (stacked by plan, metric or customer when grouped),
    the current period's estimate as a hatched bar beside them."""
    estimate = document.get("estimate") or {"currencies": []}
    estimated = {e["currency"]: Decimal(e["revenue"]) for e in estimate["currencies"]}
    currencies = _currencies(document, list(estimated)) or ["(none)"]
    by = document.get("by")
    title = "Invoiced revenue by month" + (f", by {by}" if by else "")
    fig, axes = _figure(len(currencies), title)
    months = document["months"]
    for axis, currency in zip(axes, currencies, strict=True):
        rows = [r for r in document["rows"] if r["currency"] == currency]
        groups = _stack(rows, by, months)
        bottom = [0.0] * len(months)
        for index, (name, values) in enumerate(groups.items()):
            color = _COLORS[index % len(_COLORS)]
            axis.bar(months, values, bottom=bottom, color=color, label=name or "invoiced")
            bottom = [b + v for b, v in zip(bottom, values, strict=True)]
        if not groups:  # nothing invoiced: the months stay on the axis, empty
            axis.bar(months, bottom, color="none")
        for x, total in zip(months, bottom, strict=True):
            if total:
                axis.annotate(f"{total:,.0f}", (x, total), ha="center", va="bottom", fontsize=8)
        if currency in estimated and estimate.get("periods"):
            _estimate_bar(axis, months, bottom, estimate["periods"][-1], estimated[currency])
        axis.set_title(f"{currency}", loc="left", fontsize=11)
        axis.set_xlabel("Month (billing period)")
        _money_axis(axis, currency)
        axis.set_ylim(0, max(axis.get_ylim()[1], 1) * 1.1)
        axis.tick_params(axis="x", labelrotation=45 if len(months) > 8 else 0)
        _legend(axis)
    _save(fig, path)


def _estimate_bar(
    axis: Any, months: list[str], invoiced: list[float], label: str, amount: Decimal
) -> None:
    """The current period's estimate: a hatched bar on its month (on top of anything already
    invoiced there), or after the last month."""
    x = label if label in months else f"{label}\n(estimate)"
    base = invoiced[months.index(label)] if label in months else 0.0
    axis.bar(
        [x],
        [float(amount)],
        bottom=[base],
        color="white",
        edgecolor="#2b6cb0",
        hatch="//",
        label="current period:\nestimate from live usage\n(not invoiced yet)",
    )
    axis.annotate(
        f"≈{float(amount):,.0f}", (x, base + float(amount)), ha="center", va="bottom", fontsize=8
    )


def _legend(axis: Any, columns: int = 1) -> None:
    """The legend right of the plot, where it hides no bar."""
    axis.legend(
        fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, ncol=columns
    )


def _stack(rows: list[dict[str, Any]], by: str | None, months: list[str]) -> dict[str, list[float]]:
    """Revenue per group per month, the largest groups first and the rest as 'other'."""
    sums: dict[str, dict[str, float]] = {}
    for row in rows:
        name = row.get(by, "") if by else ""
        sums.setdefault(name, {})
        sums[name][row["month"]] = sums[name].get(row["month"], 0.0) + float(row["revenue"])
    ranked = sorted(sums, key=lambda name: -sum(sums[name].values()))
    groups = {name: [sums[name].get(m, 0.0) for m in months] for name in ranked[:_MAX_GROUPS]}
    rest = ranked[_MAX_GROUPS:]
    if rest:
        groups["other"] = [sum(sums[name].get(m, 0.0) for name in rest) for m in months]
    return groups


def mrr_chart(document: dict[str, Any], path: Path) -> None:
    """Per currency: MRR as a line (ARR = 12 × MRR in the legend), and below it the month's
    movements as bars: new and expansion up, contraction and churn down."""
    currencies = _currencies(document) or ["(none)"]
    fig, axes = _figure(2 * len(currencies), "Monthly recurring revenue (MRR) and its movements", 3)
    months = document["months"]
    for index, currency in enumerate(currencies):
        rows = {r["month"]: r for r in document["rows"] if r["currency"] == currency}
        top, bottom = axes[2 * index], axes[2 * index + 1]
        values = [float(rows[m]["mrr"]) if m in rows else 0.0 for m in months]
        last = rows.get(months[-1])
        arr = f" (ARR {float(last['arr']):,.0f})" if last else ""
        top.plot(months, values, marker="o", color="#2b6cb0", label=f"MRR{arr}")
        top.fill_between(months, values, color="#bee3f8", alpha=0.5)
        top.set_title(f"{currency}: MRR", loc="left", fontsize=11)
        top.set_ylim(0, max(max(values, default=0.0), 1.0) * 1.15)
        _money_axis(top, currency)
        _legend(top)
        up = [0.0] * len(months)
        down = [0.0] * len(months)
        for name, color in _MOVES.items():
            sign = 1 if name in ("new", "expansion") else -1
            amounts = [sign * float(rows[m][name]) if m in rows else 0.0 for m in months]
            base = up if sign > 0 else down
            bottom.bar(months, amounts, bottom=base, color=color, label=name)
            for i, amount in enumerate(amounts):
                base[i] += amount
        bottom.axhline(0, color="#4a5568", linewidth=0.8)
        bottom.margins(y=0.15)
        bottom.set_title(f"{currency}: MRR movements vs the month before", loc="left", fontsize=11)
        bottom.set_xlabel("Month")
        _money_axis(bottom, currency)
        _legend(bottom)
        for axis in (top, bottom):
            axis.tick_params(axis="x", labelrotation=45 if len(months) > 8 else 0)
    _save(fig, path)


def usage_chart(document: dict[str, Any], path: Path) -> None:
    """Daily usage of one metric: the sum of the event values per day as bars, with a 7-day
    moving average line."""
    from datetime import date

    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter

    days = [date.fromisoformat(r["day"]) for r in document["rows"]]
    totals = [float(r["total"]) for r in document["rows"]]
    who = f" — customer {document['customer_id']}" if document.get("customer_id") else ""
    fig, (axis,) = _figure(1, f"Daily usage of {document['metric']}{who}", 4.6)
    axis.bar(days, totals, color="#90cdf4", width=0.8, label="per day")
    if len(totals) >= 7:
        average = [
            sum(totals[max(0, i - 6) : i + 1]) / len(totals[max(0, i - 6) : i + 1])
            for i in range(len(totals))
        ]
        axis.plot(days, average, color="#2b6cb0", linewidth=2, label="7-day average")
    locator = AutoDateLocator()  # type: ignore[no-untyped-call]
    axis.xaxis.set_major_locator(locator)
    axis.xaxis.set_major_formatter(ConciseDateFormatter(locator))  # type: ignore[no-untyped-call]
    from matplotlib.ticker import FuncFormatter

    axis.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    axis.set_ylabel(f"{document['metric']} per day (sum of event quantities)")
    axis.set_xlabel("Day (each customer's local calendar day)")
    axis.grid(axis="y", color="#e2e8f0")
    axis.set_axisbelow(True)
    axis.set_ylim(bottom=0)
    for side in ("top", "right"):
        axis.spines[side].set_visible(False)
    _legend(axis)
    _save(fig, path)
