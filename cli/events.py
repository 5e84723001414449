"""`meter events send|import`: usage into the same queue path the web apps use."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import typer
from rich.progress import Progress

from cli.customers import parse_time
from cli.output import CliError, console, print_json

app = typer.Typer(help="Send usage events.", no_args_is_help=True)


@app.command("send")
def send(
    customer: str = typer.Option(..., "--customer", help="Customer id."),
    metric: str = typer.Option(..., "--metric", help="Metric (event name)."),
    quantity: str = typer.Option("1", "--quantity", help="Decimal quantity."),
    timestamp: str | None = typer.Option(None, "--timestamp", help="RFC 3339; default now."),
    event_id: str | None = typer.Option(None, "--id", help="Event id (dedup key)."),
    properties: str | None = typer.Option(None, "--properties", help="JSON object."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Queue one event (a worker ingests it)."""
    from tasks import flush_usage, record_usage

    props = _properties(properties)
    eid = record_usage(
        customer,
        metric,
        Decimal(quantity) if _is_decimal(quantity) else quantity,
        event_id=event_id,
        timestamp=parse_time(timestamp, "--timestamp"),
        properties=props,
    )
    flush_usage()
    if as_json:
        print_json({"event_id": eid, "queued": 1})
    else:
        console.print(f"queued event {eid}")


@app.command("import")
def import_(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, help="Events, JSON Lines."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Queue every event of a JSON Lines file, with a progress bar. A bad line stops the import
    before anything is queued."""
    from tasks import flush_usage, record_usage

    events = [_parse_line(file, n, line) for n, line in _lines(file)]
    with Progress(console=console, disable=as_json, transient=False) as progress:
        task = progress.add_task("queueing events", total=len(events))
        for i, event in enumerate(events, start=1):
            record_usage(**event)
            if i % 1000 == 0 or i == len(events):
                progress.update(task, completed=i)
        flush_usage()
    if as_json:
        print_json({"queued": len(events)})
    else:
        console.print(f"queued {len(events)} event(s)")


def _is_decimal(text: str) -> bool:
    try:
        Decimal(text)
    except ArithmeticError:
        return False
    return True


def _properties(raw: str | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise CliError(f"--properties: not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise CliError("--properties: must be a JSON object")
    return value


def _lines(file: Path) -> list[tuple[int, str]]:
    return [(n, line) for n, line in enumerate(file.read_text().splitlines(), 1) if line.strip()]


def _parse_line(file: Path, number: int, line: str) -> dict[str, Any]:
    """One JSONL event as keyword arguments of `record_usage`, validated as the worker will."""
    from datetime import UTC, datetime

    from pricing.events import EventError, parse_event

    where = f"{file}:{number}"
    try:
        raw = json.loads(line)
    except json.JSONDecodeError as exc:
        raise CliError(f"{where}: not JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise CliError(f"{where}: expected a JSON object")
    unknown = set(raw) - {
        "event_id",
        "customer_id",
        "metric",
        "quantity",
        "timestamp",
        "properties",
    }
    if unknown:
        raise CliError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    for required in ("customer_id", "metric"):
        if required not in raw:
            raise CliError(f"{where}: {required}: required")
    quantity = raw.get("quantity", 1)
    event = {
        "customer_id": raw["customer_id"],
        "metric": raw["metric"],
        "quantity": Decimal(quantity) if isinstance(quantity, str) else quantity,
        "event_id": raw.get("event_id"),
        "timestamp": parse_time(raw.get("timestamp"), f"{where}: timestamp"),
        "properties": raw.get("properties"),
    }
    try:
        parse_event(
            {
                **raw,
                "event_id": raw.get("event_id") or "x",
                "timestamp": event["timestamp"] or datetime.now(UTC),
            }
        )
    except EventError as exc:
        raise CliError(f"{where}: {exc}") from exc
    return event
