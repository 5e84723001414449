"""What the `meter` command reads from its user: timestamps, JSON, events. Each refusal is a
`CliError` whose message starts with the option or the place (`events.jsonl:3: quantity`)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from cli.output import CliError
from pricing.errors import echo

# The event's keys, as the options of `meter events send` name them.
EVENT_OPTIONS = {
    "event_id": "--id",
    "customer_id": "--customer",
    "metric": "--metric",
    "quantity": "--quantity",
    "timestamp": "--timestamp",
    "properties": "--properties",
}


def parse_time(raw: str | None, option: str) -> datetime | None:
    """An RFC 3339 option value as an aware UTC datetime (None when not given). A time without
    a UTC offset is refused: taking it as UTC here while the worker refuses it would be two
    answers to one question."""
    from pricing.fields import parse_timestamp

    if raw is None:
        return None
    try:
        return parse_timestamp(raw)
    except ValueError as error:
        raise CliError(f"{option}: {error}") from None


def load_json(text: str, where: str) -> Any:
    """JSON text, or a CliError for text that is not JSON or is nested too deeply to read."""
    try:
        return json.loads(text)
    except RecursionError:
        raise CliError(f"{where}: nested too deeply") from None
    except json.JSONDecodeError as error:
        raise CliError(f"{where}: not JSON: {error}") from None


def load_json_object(text: str, where: str) -> dict[str, Any]:
    value = load_json(text, where)
    if not isinstance(value, dict):
        raise CliError(f"{where}: must be a JSON object, got {echo(text)}")
    return value


def read_event(
    line: str, where: str, *, now: datetime, defaults: Mapping[str, Any] | None = None
) -> tuple[dict[str, Any], Any]:
    """One JSON Lines event: (the object as given, the `UsageEvent` it is under the event
    contract). A missing `event_id` or `timestamp` is validated as a placeholder and `now`;
    `defaults` fill other missing keys. Unlike the worker, a timestamp must be an RFC 3339
    string with an offset (the contract), never a bare number."""
    from pricing.events import EventError, parse_event
    from pricing.fields import parse_timestamp

    raw = {**(defaults or {}), **load_json_object(line, where)}
    stamp = raw.get("timestamp")
    if stamp is not None:
        try:
            stamp = parse_timestamp(stamp)
        except ValueError as error:
            raise CliError(f"{where}: timestamp: {error}") from None
    checked = {**raw, "event_id": raw.get("event_id") or "x", "timestamp": stamp or now}
    try:
        event = parse_event(checked)
    except EventError as error:
        raise CliError(f"{where}: {error}") from None
    return raw, event


def event_error(error: ValueError, options: Mapping[str, str] = EVENT_OPTIONS) -> CliError:
    """An `EventError` (or the recorder's ValueError) with each field named by its option:
    `quantity: not a number` -> `--quantity: not a number`."""
    reasons = getattr(error, "errors", None) or [("", str(error))]
    lines = []
    for _path, reason in reasons:
        field, sep, rest = reason.partition(":")
        top = field.split(".", 1)[0].split("[", 1)[0]
        option = options.get(top)
        lines.append(f"{option}{field[len(top) :]}{sep}{rest}" if option and sep else reason)
    return CliError("; ".join(lines))


def utc_now() -> datetime:
    return datetime.now(UTC)
