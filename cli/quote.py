"""`meter quote`: price usage offline under a plan file, with no server at all."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from cli.inputs import parse_time, read_event_lines
from cli.output import CliError, console, err_console, print_json, print_table
from cli.plans import load_plan_file
from pricing.errors import echo

if TYPE_CHECKING:
    from pricing.events import Event


def _parse_usage(pairs: list[str], known: set[str]) -> dict[str, Decimal]:
    """`METRIC=QUANTITY` pairs: a metric of the plan, a quantity an event stream could add up
    to (not negative, below the ledger's bound)."""
    from pricing.events import MAX_QUANTITY
    from pricing.money import to_decimal

    usage: dict[str, Decimal] = {}
    for pair in pairs:
        metric, sep, raw = pair.partition("=")
        if not sep or not metric:
            raise CliError(f"--usage: expected METRIC=QUANTITY, got {echo(pair)}")
        if metric not in known:
            raise CliError(
                f"--usage {echo(metric)}: not a metric of this plan ({', '.join(sorted(known))})"
            )
        quantity = to_decimal(raw, field=f"--usage {metric}")
        if quantity < 0:
            raise CliError(f"--usage {metric}: must not be negative, got {echo(raw)}")
        if quantity >= MAX_QUANTITY:
            raise CliError(f"--usage {metric}: must be less than 10^18, got {echo(raw)}")
        usage[metric] = quantity
    return usage


def _parse_period(start: str | None, end: str | None) -> Any:
    """The `--period-start/--period-end` pair, checked whether or not events use it."""
    from pricing.periods import Period

    if start is None and end is None:
        return None
    if start is None or end is None:
        given, missing = (
            ("--period-start", "--period-end")
            if end is None
            else ("--period-end", "--period-start")
        )
        raise CliError(f"{missing}: required with {given}")
    first, last = parse_time(start, "--period-start"), parse_time(end, "--period-end")
    assert first is not None and last is not None  # noqa: S101 (invariant for mypy, not validation)
    if last <= first:
        raise CliError(
            f"--period-end: must be after --period-start ({first.isoformat()}), "
            f"got {last.isoformat()}"
        )
    return Period(first, last)


def read_events(path: Path) -> list[Event]:
    """Events from a JSON Lines file, under the event contract; an event without id, customer
    or time gets a default (its line number, "offline", now)."""
    lines = read_event_lines(path, now=datetime.now(UTC), defaults={"customer_id": "offline"})
    return [event for _, _, event in lines]


def quote(
    plan: Path = typer.Option(..., "--plan", exists=True, dir_okay=False, help="Plan file."),
    usage: list[str] = typer.Option([], "--usage", help="METRIC=QUANTITY (repeatable)."),
    events: Path | None = typer.Option(None, "--events", exists=True, help="Events (JSONL)."),
    period_start: str | None = typer.Option(None, "--period-start", help="RFC 3339 time."),
    period_end: str | None = typer.Option(None, "--period-end", help="RFC 3339 time."),
    as_json: bool = typer.Option(False, "--json", help="Print the quote as JSON."),
) -> None:
    """Price usage under a plan file: the invoice that usage would produce."""
    from pricing.charges.base import MetricUsage
    from pricing.periods import billing_period
    from pricing.rating import rate, usage_from_events

    the_plan = load_plan_file(plan)
    quantities = _parse_usage(usage, set(the_plan.metrics))
    period = _parse_period(period_start, period_end)
    metric_usage: dict[str, MetricUsage] = {}
    if events is not None:
        event_list = read_events(events)
        if period is None:
            first = min((e.timestamp for e in event_list), default=datetime.now(UTC))
            period = billing_period(first, interval=the_plan.interval)
        inside = [e for e in event_list if period.contains(e.timestamp)]
        if len(inside) < len(event_list):
            err_console.print(
                f"note: {len(event_list) - len(inside)} event(s) outside "
                f"{period.start.isoformat()} – {period.end.isoformat()} were not counted"
            )
        metric_usage.update(usage_from_events(the_plan, inside, period))
    for metric, quantity in quantities.items():
        metric_usage[metric] = MetricUsage(quantity=quantity, events=None)

    result = rate(the_plan, metric_usage)
    document = result.to_json()
    if as_json:
        print_json(document)
        return
    print_quote(document)


def print_quote(document: dict[str, Any]) -> None:
    rows = []
    for line in document["lines"]:
        label = line["kind"] if line["kind"] != "usage" else f"{line['metric']} ({line['model']})"
        rows.append((label, line.get("quantity", ""), line["amount"]))
        for tier in line.get("tiers", []):
            rows.append(
                (f"  tier {tier['tier']} @ {tier['unit_amount']}", tier["quantity"], tier["amount"])
            )
    currency = document["currency"]
    print_table(
        f"Quote — plan {document['plan']} ({currency})", ["line", "quantity", "amount"], rows
    )
    console.print(
        f"subtotal {document['subtotal']}   tax {document['tax']}   "
        f"[bold]total {document['total']} {currency}[/bold]"
    )
