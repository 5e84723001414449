"""What the `meter` command reads from its user: timestamps, JSON, events. Each refusal is a
`CliError` whose message starts with the option or the place (`events.jsonl:3: quantity`)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cli.output import CliError
from pricing.errors import echo

if TYPE_CHECKING:
    from pricing.events import Event

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


def read_event_lines(
    source: object, *, now: datetime, defaults: Mapping[str, Any] | None = None
) -> list[tuple[int, dict[str, Any], Event]]:
    """The events of a JSON Lines file (or text), each as (line number, the object as given,
    the `Event` it is under the event contract), decoded as one batch by the worker's own
    decoder. A missing (or null) `event_id` or `timestamp` is validated as `line-N` and `now`;
    `defaults` fill other missing keys. The first bad line is a CliError naming the file,
    the line and the field (`events.jsonl:3: quantity: ...`)."""
    from pricing.decoding import decode_batch

    text = source.read_text() if isinstance(source, Path) else str(source)
    lines = [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    given = [{**(defaults or {}), **load_json_object(line, f"{source}:{n}")} for n, line in lines]
    checked = [
        {
            **raw,
            "event_id": f"line-{n}" if raw.get("event_id") is None else raw["event_id"],
            "timestamp": now if raw.get("timestamp") is None else raw["timestamp"],
        }
        for (n, _), raw in zip(lines, given, strict=True)
    ]
    events, rejected = decode_batch(checked)
    if rejected:
        first = rejected[0]
        raise CliError(f"{source}:{lines[first.position or 0][0]}: {first.detail}")
    return [(n, raw, event) for (n, _), raw, event in zip(lines, given, events, strict=True)]


def event_error(error: ValueError, options: Mapping[str, str] = EVENT_OPTIONS) -> CliError:
    """An `EventError` (the decoder's or the recorder's) with each field named by its option:
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
