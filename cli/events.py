"""`meter events send|import`: usage into the same queue path the web apps use."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import typer
from rich.progress import Progress

from cli.inputs import event_error, load_json_object, parse_time, read_event, utc_now
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
    """Queue one event (a worker ingests it). What can be checked here is checked before it
    is queued: the event contract, the customer, the metric of its plan, the accepted window."""
    from pricing.events import EventError, parse_event
    from tasks import record_usage

    stamp = parse_time(timestamp, "--timestamp")
    props = None if properties is None else load_json_object(properties, "--properties")
    fields = {
        "event_id": event_id or "x",
        "customer_id": customer,
        "metric": metric,
        "quantity": quantity,
        "timestamp": stamp or utc_now(),
        "properties": props or {},
    }
    try:
        event = parse_event(fields)
    except EventError as error:
        raise event_error(error) from None
    _refuse_what_ingest_would_reject([("", event)], options=True)
    _check_broker()
    eid = record_usage(
        event.customer_id,
        event.metric,
        event.quantity,
        event_id=event_id,
        timestamp=stamp,
        properties=props,
    )
    _flush()
    if as_json:
        print_json({"event_id": eid, "queued": 1})
    else:
        console.print(f"queued event {eid}")


@app.command("import")
def import_(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, help="Events, JSON Lines."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Queue every event of a JSON Lines file, with a progress bar. A bad line (bad values, an
    unknown customer or metric, a time outside the accepted window) stops the import before
    anything is queued."""
    from tasks import record_usage

    now = utc_now()
    parsed = [_parse_line(file, n, line, now) for n, line in _lines(file)]
    _refuse_what_ingest_would_reject([(where, event) for where, event, _ in parsed])
    _check_broker()
    events = [kwargs for _, _, kwargs in parsed]
    with Progress(console=console, disable=as_json, transient=False) as progress:
        task = progress.add_task("queueing events", total=len(events))
        for i, event in enumerate(events, start=1):
            record_usage(**event)
            if i % 1000 == 0 or i == len(events):
                progress.update(task, completed=i)
        _flush()
    if as_json:
        print_json({"queued": len(events)})
    else:
        console.print(f"queued {len(events)} event(s)")


def _lines(file: Path) -> list[tuple[int, str]]:
    return [(n, line) for n, line in enumerate(file.read_text().splitlines(), 1) if line.strip()]


def _parse_line(
    file: Path, number: int, line: str, now: datetime
) -> tuple[str, Any, dict[str, Any]]:
    """(where, the validated event, keyword arguments of `record_usage`) of one JSONL line."""
    where = f"{file}:{number}"
    raw, event = read_event(line, where, now=now)
    kwargs = {
        "customer_id": event.customer_id,
        "metric": event.metric,
        "quantity": event.quantity,
        "event_id": raw.get("event_id"),
        "timestamp": event.timestamp if raw.get("timestamp") is not None else None,
        "properties": raw.get("properties"),
    }
    return where, event, kwargs


def _refuse_what_ingest_would_reject(
    events: Sequence[tuple[str, Any]], *, options: bool = False
) -> None:
    """Ask the ingest rules (customer, plan, metric, window) about the events before queueing
    them: a refused one is an error here rather than a row in rejected_events later. Checked
    a chunk at a time; a chunk with a refusal is checked event by event to say which."""
    from storage.ingest import refusals

    for start in range(0, len(events), _CHECK_CHUNK):
        chunk = events[start : start + _CHECK_CHUNK]
        if not refusals([_wire(event) for _, event in chunk]):
            continue
        for where, event in chunk:
            found = refusals([_wire(event)])
            if found:
                detail = found[0].detail
                if options:
                    raise event_error(ValueError(detail))
                raise CliError(f"{where}: {detail}")


def _wire(event: Any) -> dict[str, Any]:
    """The event as the ingest message carries it."""
    return dict(event.model_dump(mode="json"))


def _check_broker() -> None:
    """Fail now, with the URL, when the broker cannot be reached (the recorder would retry
    for ever)."""
    from storage.embedded import broker_url
    from storage.settings import display_url
    from tasks.broker import get_broker

    client = getattr(get_broker(), "client", None)  # the Redis broker's client
    if client is None:
        return
    try:
        client.ping()
    except Exception as error:  # redis.ConnectionError, TimeoutError, AuthenticationError
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise CliError(
            f"broker: cannot connect to {display_url(broker_url())} ({reason})"
        ) from None


def _flush() -> None:
    from tasks import flush_usage

    if not flush_usage(timeout=_FLUSH_TIMEOUT_S):
        raise CliError(
            f"broker: events not queued after {_FLUSH_TIMEOUT_S:.0f} s; is it reachable?"
        )


_CHECK_CHUNK = 1000
_FLUSH_TIMEOUT_S = 60.0
