"""`meter quote`: price usage offline under a plan file, with no server at all."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import typer

from cli.output import CliError, console, err_console, print_json, print_table


def _parse_usage(pairs: list[str], known: set[str]) -> dict[str, Decimal]:
    from pricing.money import to_decimal

    usage: dict[str, Decimal] = {}
    for pair in pairs:
        metric, sep, raw = pair.partition("=")
        if not sep or not metric:
            raise CliError(f"--usage {pair!r}: expected METRIC=QUANTITY")
        if metric not in known:
            raise CliError(
                f"--usage {metric}: not a metric of this plan ({', '.join(sorted(known))})"
            )
        usage[metric] = to_decimal(raw, field=f"--usage {metric}")
    return usage


def _parse_timestamp(raw: str, option: str) -> datetime:
    try:
        value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError as exc:
        raise CliError(f"{option}: not an RFC 3339 timestamp: {raw!r}") from exc
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def read_events(path: Path) -> list[Any]:
    """Events from a JSON Lines file; an event without id, customer or time gets a default."""
    from pydantic import ValidationError

    from pricing.events import UsageEvent

    events = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
            raw.setdefault("event_id", f"line-{number}")
            raw.setdefault("customer_id", "offline")
            raw.setdefault("timestamp", datetime.now(UTC).isoformat())
            events.append(UsageEvent.model_validate(raw))
        except (json.JSONDecodeError, ValidationError, AttributeError) as exc:
            raise CliError(f"{path}:{number}: invalid event: {exc}") from exc
    return events


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
    from pricing.periods import Period, billing_period
    from pricing.plans import load_plan
    from pricing.rating import rate, usage_from_events

    the_plan = load_plan(plan.read_text())
    quantities = _parse_usage(usage, set(the_plan.metrics))
    metric_usage: dict[str, MetricUsage] = {}
    if events is not None:
        event_list = read_events(events)
        if period_start and period_end:
            period = Period(
                _parse_timestamp(period_start, "--period-start"),
                _parse_timestamp(period_end, "--period-end"),
            )
        else:
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
