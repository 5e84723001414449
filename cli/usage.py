"""`meter usage CUSTOMER_ID`: the current period's usage and estimated bill, live."""

from __future__ import annotations

from typing import Any

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
    print_table(
        f"{document['customer_id']} — plan {document['plan']}, "
        f"{document['period_start'][:10]} to {document['period_end'][:10]}",
        ["metric", "used", "included", "overage", f"est. cost ({document['currency']})"],
        rows,
    )
    console.print(
        f"estimated total [bold]{document['estimated_total']} {document['currency']}[/bold]"
        f"  (as of {document['as_of']})"
    )
