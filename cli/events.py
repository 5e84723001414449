"""`meter events send|import`: usage into the same queue path the web apps use."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.progress import Progress

from cli.inputs import event_error, load_json, parse_time, read_event_lines, utc_now
from cli.output import CliError, console, print_json

if TYPE_CHECKING:
    from pricing.events import Event

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
    from pricing.decoding import decode_event
    from pricing.events import EventError
    from tasks import record_usage

    stamp = parse_time(timestamp, "--timestamp")
    # Any JSON here: the event contract says what properties must be, as it does to the worker.
    props = None if properties is None else load_json(properties, "--properties")
    fields = {
        "event_id": event_id or "x",
        "customer_id": customer,
        "metric": metric,
        "quantity": quantity,
        "timestamp": stamp or utc_now(),
        "properties": {} if props is None else props,
    }
    try:
        event = decode_event(fields)
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
        properties=None if props is None else event.properties,
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

    parsed = read_event_lines(file, now=utc_now())
    _refuse_what_ingest_would_reject([(f"{file}:{n}", event) for n, _, event in parsed])
    _check_broker()
    events = [_record_arguments(raw, event) for _, raw, event in parsed]
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


def _record_arguments(raw: dict[str, Any], event: Event) -> dict[str, Any]:
    """Keyword arguments of `record_usage` for a decoded line: an id or a time the line did
    not give is left to the recorder (the decoder saw placeholders)."""
    return {
        "customer_id": event.customer_id,
        "metric": event.metric,
        "quantity": event.quantity,
        "event_id": event.event_id if raw.get("event_id") is not None else None,
        "timestamp": event.timestamp if raw.get("timestamp") is not None else None,
        "properties": event.properties,
    }


def _refuse_what_ingest_would_reject(
    events: Sequence[tuple[str, Event]], *, options: bool = False
) -> None:
    """Ask the ingest rules (customer, plan, metric, window) about the events before queueing
    them: a refused one is an error here rather than a row in rejected_events later. Checked
    a chunk at a time; a chunk with a refusal is checked event by event to say which."""
    from services.ingest import refusals

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


def _wire(event: Event) -> dict[str, Any]:
    """The event as the ingest message carries it."""
    from pricing.events import event_json

    return event_json(event)


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
