"""How the `meter` command talks: JSON on stdout for scripts, rich tables for people, errors on
stderr with a non-zero exit."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Any

from rich.console import Console
from rich.table import Table

console = Console()
err_console = Console(stderr=True)


class CliError(Exception):
    """An error the user can fix: printed on stderr without a traceback, exit code 1."""


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return format(value, "f")
    if hasattr(value, "isoformat"):
        return value.isoformat()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def print_json(document: Any) -> None:
    """One JSON document on stdout, nothing else there."""
    sys.stdout.write(json.dumps(document, default=_default, indent=2) + "\n")
    sys.stdout.flush()


def print_table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*("" if cell is None else str(cell) for cell in row))
    console.print(table)


def fail(message: str) -> CliError:
    return CliError(message)
