"""`meter usage CUSTOMER_ID`: the current period's usage and estimated bill, live."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import typer

from cli.output import console, print_json, print_table
from pricing.money import format_decimal


def usage(
    customer_id: str = typer.Argument(..., metavar="CUSTOMER_ID"),
    at: str | None = typer.Option(
        None, "--at", help="RFC 3339: the period containing this moment; default now."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Per metric: used, included, overage, estimated cost; and the estimated total."""
    from cli.inputs import parse_time
    from services.alert_settings import fired_this_period
    from services.usage import current_usage

    report = current_usage(customer_id, parse_time(at, "--at"))
    document = report.to_json()
    fired = fired_this_period(report)
    for name, metric in document["metrics"].items():
        metric["alerts_fired"] = fired.get(name, [])
    document["spend_alerts_fired"] = fired.get("", [])
    if as_json:
        print_json(document)
        return
    print_usage(document)


def print_usage(document: dict[str, Any]) -> None:
    """The metrics, then the base fee, minimum true-up and tax rows: the cost column adds up
    to the estimated total."""
    rows: list[tuple[str, ...]] = [
        (name, m["used"], m["included"], m["overage"], m["estimated_cost"])
        for name, m in document["metrics"].items()
    ]
    rows += [(label, "", "", "", amount) for label, amount in _fee_rows(document)]
    zone = ZoneInfo(document.get("timezone", "UTC"))
    start = datetime.fromisoformat(document["period_start"]).astimezone(zone)
    end = datetime.fromisoformat(document["period_end"]).astimezone(zone) - timedelta(days=1)
    print_table(
        f"{document['customer_id']} — plan {document['plan']}, "
        f"{start:%d %b} – {end:%d %b %Y} ({zone.key})",
        ["metric", "used", "included", "overage", f"est. cost ({document['currency']})"],
        rows,
    )
    console.print(
        f"estimated total [bold]{document['estimated_total']} {document['currency']}[/bold]"
        f"  (as of {document['as_of']})"
    )
    fired = [
        f"{name} {', '.join(_share_text(t) for t in m['alerts_fired'])}"
        for name, m in document["metrics"].items()
        if m.get("alerts_fired")
    ]
    if document.get("spend_alerts_fired"):
        amounts = ", ".join(document["spend_alerts_fired"])
        fired.append(f"spend {amounts} {document['currency']}")
    if fired:
        console.print("alerts fired this period: " + "; ".join(fired))


def _share_text(threshold: str) -> str:
    """'0.8' -> '80%'; a hard limit ('limit 5000') as it is."""
    if threshold.startswith("limit"):
        return threshold
    return f"{format_decimal(Decimal(threshold) * 100)}%"


def _fee_rows(document: dict[str, Any]) -> list[tuple[str, str]]:
    """Base fee, minimum true-up and tax, each when it is not zero (or the plan has a tax
    rate): a row left out is zero, so the column still adds up to the total."""
    proration = document.get("proration")
    days = f" ({proration['days']}/{proration['period_days']} days)" if proration else ""
    rows = []
    if Decimal(document["base_fee"]):
        rows.append((f"base fee{days}", document["base_fee"]))
    if Decimal(document["minimum_true_up"]):
        rows.append((f"minimum spend true-up{days}", document["minimum_true_up"]))
    if Decimal(document["tax"]) or Decimal(document["tax_rate"]):
        percent = Decimal(document["tax_rate"]) * 100
        rows.append((f"tax ({format_decimal(percent)} %)", document["tax"]))
    return rows
