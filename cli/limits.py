"""`meter limits ...`: hard limits, throttling and spend caps; per-customer overrides."""

from __future__ import annotations

from decimal import Decimal
from enum import StrEnum
from typing import Any

import typer

from cli.inputs import parse_time
from cli.output import CliError, console, print_json, print_table

app = typer.Typer(help="Hard limits, throttling and spend caps.", no_args_is_help=True)


class Field(StrEnum):
    hard_limit = "hard-limit"
    throttle_at = "throttle-at"
    spend_cap = "spend-cap"


def _number(raw: str | None, option: str) -> Decimal | None:
    if raw is None:
        return None
    from pricing.fields import parse_share, plan_number

    try:
        return parse_share(raw) if option == "--throttle-at" else plan_number(raw)
    except ValueError as error:
        raise CliError(option, str(error)) from None


@app.command("check")
def check(
    customer_id: str = typer.Argument(..., metavar="CUSTOMER"),
    metric: str = typer.Argument(..., metavar="METRIC"),
    quantity: str = typer.Option("1", "--quantity", help="Units the request would use."),
    at: str | None = typer.Option(None, "--at", help="RFC 3339; default now."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Would QUANTITY more of METRIC be allowed now? What check_limit answers."""
    from services.limits import check_limit

    decision = check_limit(customer_id, metric, quantity, at=parse_time(at, "--at"))
    document = decision.to_json()
    if as_json:
        print_json(document)
        return
    verdict = (
        "[green]allowed[/green]" if decision.allowed else f"[red]refused[/red] ({decision.reason})"
    )
    throttle = ", [yellow]throttle[/yellow]" if decision.throttle else ""
    console.print(f"{customer_id} {metric} +{document['quantity']}: {verdict}{throttle}")
    rows = [(key, "" if document[key] is None else str(document[key])) for key in _CHECK_ROWS]
    rows += [(key, document[key]) for key in ("estimated_total", "spend_cap") if key in document]
    print_table("", ["", "value"], rows)


_CHECK_ROWS = ("used", "pending", "included", "limit", "remaining", "resets_at")


@app.command("set")
def set_limits(
    customer_id: str = typer.Argument(..., metavar="CUSTOMER"),
    metric: str | None = typer.Option(None, "--metric", help="The metric of the limits below."),
    hard_limit: str | None = typer.Option(None, "--hard-limit", help="Units per period."),
    throttle_at: str | None = typer.Option(
        None, "--throttle-at", help='Share of the included usage, e.g. "0.95".'
    ),
    spend_cap: str | None = typer.Option(None, "--spend-cap", help="Estimated bill per period."),
    clear: list[Field] = typer.Option(
        [], "--clear", help="Back to the plan's value (repeatable): hard-limit, throttle-at, …"
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Override a customer's limits (each beats the plan's); --clear goes back to the plan."""
    from services.overrides import set_overrides
    from storage.catalog.limits import OverrideChange

    change = OverrideChange(
        metric=metric,
        hard_limit=_number(hard_limit, "--hard-limit"),
        throttle_at=_number(throttle_at, "--throttle-at"),
        spend_cap=_number(spend_cap, "--spend-cap"),
        clear_hard_limit=Field.hard_limit in clear,
        clear_throttle_at=Field.throttle_at in clear,
        clear_spend_cap=Field.spend_cap in clear,
    )
    if (change.clear_hard_limit or change.clear_throttle_at) and metric is None:
        raise CliError("--metric", "required to clear a metric's hard limit or throttle")
    if change == OverrideChange(metric=metric):
        raise CliError(
            "", "nothing to change: give --hard-limit, --throttle-at, --spend-cap or --clear"
        )
    set_overrides(customer_id, change)
    show(customer_id, as_json=as_json)


@app.command("show")
def show(
    customer_id: str = typer.Argument(..., metavar="CUSTOMER"),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """The limits in force for each metric of the customer's plan (overrides marked)."""
    from services.overrides import limits_table

    document: dict[str, Any] = limits_table(customer_id)
    if as_json:
        print_json(document)
        return
    rows = [
        (
            name,
            _marked(m["hard_limit"], "hard_limit" in m["overridden"]),
            _marked(m["throttle_at"], "throttle_at" in m["overridden"]),
            m["included"],
        )
        for name, m in document["metrics"].items()
    ]
    print_table(
        f"{customer_id} — plan {document['plan']} (* = customer override)",
        ["metric", "hard limit", "throttle at", "included"],
        rows,
    )
    cap = _marked(document["spend_cap"], document["spend_cap_overridden"])
    console.print(f"spend cap: {cap or 'none'} {document['currency']}")


def _marked(value: str | None, overridden: bool) -> str:
    if value is None:
        return ""
    return f"{value} *" if overridden else value
