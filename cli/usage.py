"""`meter usage CUSTOMER_ID`: the current period's usage and estimated bill, live."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import typer

from cli.output import console, print_json, print_table


def usage(
    customer_id: str = typer.Argument(..., metavar="CUSTOMER_ID"),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Per metric: used, included, overage, estimated cost; and the estimated total."""
    from storage.live_usage import current_usage

    document = current_usage(customer_id).to_json()
    if as_json:
        print_json(document)
        return
    print_usage(document)


def print_usage(document: dict[str, Any]) -> None:
    rows = [
        (name, m["used"], m["included"], m["overage"], m["estimated_cost"])
        for name, m in document["metrics"].items()
    ]
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
