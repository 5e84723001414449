"""`meter analytics ...`: revenue, MRR, overage, top customers, near-limit, usage trends and
price backtesting; each prints a table, or one JSON document with `--json`; `--chart FILE.png`
draws revenue, MRR and usage (cli/charts.py)."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import typer

from cli.inputs import utc_now
from cli.output import CliError, console, print_json, print_table
from pricing.errors import echo

app = typer.Typer(help="Revenue analytics and price backtesting.", no_args_is_help=True)

_JSON = typer.Option(False, "--json", help="Print JSON.")
_CHART = typer.Option(None, "--chart", help="Also draw the report into this PNG file.")
_FROM = "First month, YYYY-MM."
_TO = "Last month, YYYY-MM (inclusive)."


def _months(first: str | None, last: str | None, default_last: str, span: int) -> tuple[str, str]:
    from pricing.analytics import parse_month, shift_month

    last = last or default_last
    parse_month(last, "--to")
    first = first or shift_month(last, -(span - 1))
    parse_month(first, "--from")
    return first, last


def _chart_path(chart: Path | None) -> None:
    if chart is not None:
        from cli.charts import check_path

        check_path(chart)


def _wrote(chart: Path | None) -> None:
    if chart is not None:
        console.print(f"chart written to {chart}", highlight=False)


@app.command("revenue")
def revenue(
    first: str | None = typer.Option(None, "--from", help=_FROM + " Default: 11 months back."),
    last: str | None = typer.Option(None, "--to", help=_TO + " Default: this month."),
    by: str | None = typer.Option(None, "--by", help="Group by plan, metric or customer."),
    no_estimate: bool = typer.Option(False, "--no-estimate", help="Skip the live estimate."),
    chart: Path | None = _CHART,
    as_json: bool = _JSON,
) -> None:
    """Invoiced revenue per month (finalized and paid invoices, before tax), per currency; the
    current period's estimate from live usage apart."""
    from services import analytics

    _chart_path(chart)
    now = utc_now()
    first, last = _months(first, last, analytics.current_month(now), 12)
    document = analytics.revenue(first, last, by=by, now=now, estimate=not no_estimate)
    if chart is not None:
        from cli.charts import revenue_chart

        revenue_chart(document, chart)
    if as_json:
        print_json(document)
        return
    print_revenue(document)
    _wrote(chart)


def print_revenue(document: dict[str, Any]) -> None:
    """The revenue report as tables: invoiced per month, totals, then the estimate apart."""
    by = document["by"]
    group = [by] if by else []
    money = ["revenue"] if by in ("metric", "plan") else ["revenue", "tax", "total"]
    print_table(
        f"Invoiced revenue {document['from']} – {document['to']}" + (f" by {by}" if by else ""),
        ["month", "currency", *group, "invoices", *money],
        [
            (
                r["month"],
                r["currency"],
                *(r[g] for g in group),
                r["invoices"],
                *(r[m] for m in money),
            )
            for r in document["rows"]
        ],
        whole={"customer"},
    )
    for total in document["totals"]:
        console.print(f"total {total['revenue']} {total['currency']}", highlight=False)
    if not document["rows"]:
        console.print("no finalized invoices in these months")
    _print_estimate(document["estimate"])


def _print_estimate(estimate: dict[str, Any] | None) -> None:
    if not estimate or not estimate["currencies"]:
        return
    console.print(
        f"Current period {', '.join(estimate['periods'])}: estimate from live usage"
        " (not invoiced yet)",
        highlight=False,
    )
    print_table(
        "Estimate",
        ["currency", "customers", "revenue", "total"],
        [(e["currency"], e["customers"], e["revenue"], e["total"]) for e in estimate["currencies"]],
    )


@app.command("mrr")
def mrr(
    month: str | None = typer.Option(None, "--month", help="Last month shown, YYYY-MM."),
    count: int = typer.Option(12, "--months", help="How many months to show."),
    trailing: int = typer.Option(3, "--trailing", help="Months of usage revenue averaged."),
    chart: Path | None = _CHART,
    as_json: bool = _JSON,
) -> None:
    """MRR and ARR per currency (base fees plus trailing usage revenue; see the README), with
    new, expansion, contraction and churned MRR against the month before."""
    from services import analytics

    _chart_path(chart)
    document = analytics.mrr(
        month or analytics.last_ended_month(utc_now()), count=count, trailing=trailing
    )
    if chart is not None:
        from cli.charts import mrr_chart

        mrr_chart(document, chart)
    if as_json:
        print_json(document)
        return
    columns = ["customers", "mrr", "arr", "new", "expansion", "contraction", "churned", "net"]
    print_table(
        f"MRR (base fees + {trailing}-month trailing usage), per currency",
        ["month", "currency", *columns],
        [(r["month"], r["currency"], *(_signed(r, c) for c in columns)) for r in document["rows"]],
    )
    if not document["rows"]:
        console.print("no finalized invoices in these months")
    _wrote(chart)


def _signed(row: dict[str, Any], column: str) -> Any:
    value = row[column]
    if column in ("contraction", "churned") and Decimal(value):
        return f"-{value}"
    return value


@app.command("overage")
def overage(
    first: str | None = typer.Option(None, "--from", help=_FROM + " Default: 11 months back."),
    last: str | None = typer.Option(None, "--to", help=_TO + " Default: last month."),
    as_json: bool = _JSON,
) -> None:
    """The share of revenue from usage beyond the included allowances, per metric."""
    from services import analytics

    first, last = _months(first, last, analytics.last_ended_month(utc_now()), 12)
    document = analytics.overage(first, last)
    if as_json:
        print_json(document)
        return
    print_table(
        f"Overage revenue {first} – {last}",
        ["currency", "metric", "invoices", "quantity", "overage revenue", "% of revenue"],
        [
            (
                r["currency"],
                r["metric"],
                r["invoices"],
                r["quantity"],
                r["overage_revenue"],
                r["share_percent"],
            )
            for r in document["rows"]
        ],
    )
    for t in document["totals"]:
        console.print(
            f"{t['currency']}: overage {t['overage_revenue']} of revenue {t['revenue']}"
            f" ({t['share_percent']}%)",
            highlight=False,
        )


@app.command("customers")
def customers(
    top: int = typer.Option(10, "--top", help="How many customers per currency."),
    by: str = typer.Option("revenue", "--by", help="revenue or growth."),
    first: str | None = typer.Option(None, "--from", help=_FROM + " Default: 2 months back."),
    last: str | None = typer.Option(None, "--to", help=_TO + " Default: last month."),
    as_json: bool = _JSON,
) -> None:
    """The top customers of each currency by revenue over the months, or by growth (the last
    month against the month before)."""
    from services import analytics

    first, last = _months(first, last, analytics.last_ended_month(utc_now()), 3)
    document = analytics.top_customers(first, last, top=top, by=by)
    if as_json:
        print_json(document)
        return
    print_table(
        f"Top {top} customers by {by}, {first} – {last}",
        ["currency", "#", "customer", "revenue", "month before", "last month", "growth", "%"],
        [
            (
                r["currency"],
                r["rank"],
                r["customer_id"],
                r["revenue"],
                r["month_before"],
                r["last_month"],
                r["growth"],
                r["growth_percent"] or "new",
            )
            for r in document["rows"]
        ],
        whole={"customer"},
    )


@app.command("near-limit")
def near_limit(
    threshold: str = typer.Option("80", "--threshold", help="Percent of an allowance or limit."),
    as_json: bool = _JSON,
) -> None:
    """Customers at or above a share of a metric's included allowance or hard limit now."""
    from services import analytics

    try:
        share = Decimal(threshold)
    except InvalidOperation:
        raise CliError(f"--threshold: not a number: {echo(threshold)}") from None
    if not share.is_finite():
        raise CliError(f"--threshold: not a number: {echo(threshold)}")
    document = analytics.near_limit(share, utc_now())
    if as_json:
        print_json(document)
        return
    print_table(
        f"Customers at or above {document['threshold_percent']}% of an allowance or limit",
        ["customer", "plan", "metric", "used", "included", "% included", "hard limit", "% limit"],
        [
            (
                r["customer_id"],
                r["plan"],
                r["metric"],
                r["used"],
                r["included"],
                r["included_percent"] or "",
                r["hard_limit"] or "",
                r["limit_percent"] or "",
            )
            for r in document["rows"]
        ],
        whole={"customer"},
    )


def _day(raw: str | None, option: str, default: date) -> date:
    if raw is None:
        return default
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise CliError(f"{option}: expected a day YYYY-MM-DD, got {echo(raw)}") from None


@app.command("usage")
def usage(
    metric: str = typer.Option(..., "--metric", help="The metric."),
    first: str | None = typer.Option(None, "--from", help="First day, YYYY-MM-DD."),
    last: str | None = typer.Option(None, "--to", help="Last day, YYYY-MM-DD (inclusive)."),
    customer: str | None = typer.Option(None, "--customer", help="Only this customer."),
    chart: Path | None = _CHART,
    as_json: bool = _JSON,
) -> None:
    """Daily usage of a metric from the daily rollups (default: the last 30 days)."""
    from services import analytics

    _chart_path(chart)
    today = utc_now().date()
    end = _day(last, "--to", today)
    start = _day(first, "--from", end - timedelta(days=29))
    document = analytics.usage_trend(metric, start, end, customer)
    if chart is not None:
        from cli.charts import usage_chart

        usage_chart(document, chart)
    if as_json:
        print_json(document)
        return
    print_table(
        f"Daily usage of {metric}" + (f" for {customer}" if customer else ""),
        ["day", "events", "total", "customers"],
        [(r["day"], r["events"], r["total"], r["customers"]) for r in document["rows"]],
    )
    console.print(f"total {document['total']} over {document['events']} events", highlight=False)
    _wrote(chart)


@app.command("backtest")
def backtest(
    plan: Path = typer.Option(..., "--plan", exists=True, dir_okay=False, help="Plan file."),
    period: str = typer.Option(..., "--period", help="The period, YYYY-MM (YYYY if yearly)."),
    customer: list[str] = typer.Option([], "--customer", help="Only these (repeatable)."),
    as_json: bool = _JSON,
) -> None:
    """Re-price a period's real usage (from the rollups) under another plan file: per customer
    and in total, what was billed and what would have been. Changes nothing."""
    from cli.plans import load_plan_file
    from services.backtest import backtest as run

    candidate = load_plan_file(plan)
    document = run(candidate, period, now=utc_now(), customer_ids=customer or None)
    if as_json:
        print_json(document)
        return
    print_table(
        f"Backtest of plan {candidate.code} on {period} (subtotals before tax)",
        ["customer", "billed under", "invoice", "currency", "billed", "backtest", "difference"],
        [
            (
                r["customer_id"],
                ", ".join(r["plans"]),
                r["status"],
                r["currency"],
                r["billed"],
                r["backtest"],
                r["difference"],
            )
            for r in document["rows"]
        ],
        whole={"customer"},
    )
    for t in document["totals"]:
        console.print(
            f"{t['currency']}: {t['customers']} customers, billed {t['billed']},"
            f" under {candidate.code} {t['backtest']}, difference {t['difference']}",
            highlight=False,
        )
    for s in document["skipped"]:
        console.print(f"skipped {s['customer_id']}: {s['reason']}", highlight=False)
