"""How the `meter` command talks: JSON on stdout for scripts, rich tables for people, errors on
stderr with a non-zero exit."""

from __future__ import annotations

import json
import sys
from collections.abc import Collection, Iterable, Sequence
from decimal import Decimal
from typing import Any

from rich.console import Console
from rich.table import Table

from pricing.errors import UserError

console = Console()
err_console = Console(stderr=True)


class CliError(UserError):
    """An error the user can fix: printed on stderr as `error: field: reason`, exit status 2."""


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


def print_table(
    title: str,
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    *,
    whole: Collection[str] = (),
) -> None:
    """A table whose values are never cut short ("inv_36fb…"): values wrap between words (a
    word wider than its column goes on over the next line), the columns named in `whole` (ids,
    to be copied) keep each value on one line, and a terminal too narrow for every column's
    longest word gets a wider table (its lines wrap) rather than a cut."""
    table = Table(title=title, title_justify="left")
    texts = [["" if cell is None else str(cell) for cell in row] for row in rows]
    needed = len(columns) + 1  # the vertical borders
    for index, column in enumerate(columns):
        cells = [column, *(row[index] for row in texts)]
        if column in whole:
            width = max(len(line) for cell in cells for line in cell.splitlines() or [""])
            table.add_column(column, no_wrap=True, min_width=width)
        else:
            width = max(len(word) for cell in cells for word in cell.split() or [""])
            table.add_column(column, overflow="fold")
        needed += width + 2  # one space of padding on each side
    for row in texts:
        table.add_row(*row)
    if needed <= console.width:
        console.print(table)
    else:
        Console(
            file=console.file,
            width=needed,
            force_terminal=console.is_terminal,
            color_system=console.color_system,  # type: ignore[arg-type]
        ).print(table)
