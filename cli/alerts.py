"""`meter alerts ...`: alerts fired (once per customer × metric × threshold × period) and a
customer's own thresholds."""

from __future__ import annotations

import typer

from cli.output import console, print_json, print_table

app = typer.Typer(help="Usage and spend alerts.", no_args_is_help=True)


@app.command("list")
def list_alerts(
    customer: str | None = typer.Option(None, "--customer", help="Only this customer."),
    period: str | None = typer.Option(None, "--period", help="Only this period (YYYY-MM)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Alerts fired, oldest first."""
    from services.alert_settings import alert_json, list_alerts

    documents = [alert_json(alert) for alert in list_alerts(customer, period)]
    if as_json:
        print_json(documents)
        return
    print_table(
        "Alerts",
        ["id", "customer", "period", "kind", "metric", "threshold", "value", "est. bill", "at"],
        [
            (
                d["id"],
                d["customer_id"],
                d["period"],
                d["kind"],
                d["metric"] or "",
                _threshold_text(d),
                d["value"],
                f"{d['estimated_bill']} {d['currency']}" if d["estimated_bill"] else "",
                d["triggered_at"][:19].replace("T", " "),
            )
            for d in documents
        ],
        whole=("id", "customer"),
    )


def _threshold_text(document: dict[str, str]) -> str:
    if document["kind"] == "usage":
        from decimal import Decimal

        from pricing.money import format_decimal

        share = format_decimal(Decimal(document["threshold"]) * 100)
        return f"{share}% of {document['basis']}"
    return document["threshold"]


@app.command("set")
def set_overrides(
    customer_id: str = typer.Argument(..., metavar="CUSTOMER"),
    metric: str | None = typer.Option(
        None, "--metric", help="Only this metric (default: every metric of the plan)."
    ),
    thresholds: str | None = typer.Option(
        None, "--thresholds", help="Shares of included usage, e.g. 0.5,0.8,1 (1 is 100 %)."
    ),
    off: bool = typer.Option(False, "--off", help="No usage alerts (for --metric, or all)."),
    spend: str | None = typer.Option(
        None, "--spend", help="Amounts of the estimated bill, e.g. 50.00,100.00."
    ),
    spend_off: bool = typer.Option(False, "--spend-off", help="No spend alerts."),
    clear: bool = typer.Option(
        False, "--clear", help="Back to the plan's thresholds (for --metric, or all)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Set a customer's own alert thresholds (they replace the plan's)."""
    from pricing.errors import UserError
    from services.alert_settings import OverrideChange, apply_overrides, parse_amounts, parse_shares

    if thresholds is not None and off:
        raise UserError("--off", "give either --thresholds or --off")
    if spend is not None and spend_off:
        raise UserError("--spend-off", "give either --spend or --spend-off")
    shares = parse_shares(thresholds, "--thresholds") if thresholds is not None else None
    amounts = parse_amounts(spend, "--spend") if spend is not None else None
    change = OverrideChange(
        metric=metric,
        shares=() if off else shares,
        spend=() if spend_off else amounts,
        clear=clear,
    )
    _show(apply_overrides(customer_id, change), as_json)


@app.command("show")
def show(
    customer_id: str = typer.Argument(..., metavar="CUSTOMER"),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """A customer's alert rules on its current plan, and which have fired this period."""
    from services.alert_settings import rules_json

    _show(rules_json(customer_id), as_json)


def _show(document: dict[str, object], as_json: bool) -> None:
    if as_json:
        print_json(document)
        return
    rules = document["rules"]
    assert isinstance(rules, list)  # noqa: S101 (invariant for mypy, not validation)
    print_table(
        f"{document['customer_id']} — plan {document['plan']}, period {document['period']}",
        ["kind", "metric", "threshold", "reached at", "fired"],
        [
            (r["kind"], r["metric"] or "", r["label"], r["at"], "yes" if r["fired"] else "")
            for r in rules
        ],
    )
    if not rules:
        console.print("no alert rules")
