"""The error a plan file is refused with: every problem at once, each at its own path."""

from __future__ import annotations


class PlanError(ValueError):
    """A plan that cannot be used, with the reasons as (field path, reason) pairs.

    Paths use the plan file's own names (`charges[0].tiers[1].up_to`, `metrics.seats.field`),
    so the message points at the line to fix. Validators inside the plan models raise it with
    paths relative to themselves; `load_plan` prefixes them with where the model sits.
    """

    def __init__(self, errors: list[tuple[str, str]]) -> None:
        self.errors = list(errors)
        super().__init__("\n".join(_line(path, reason) for path, reason in self.errors))


def _line(path: str, reason: str) -> str:
    return f"{path}: {reason}" if path else reason


def join_path(prefix: str, path: str) -> str:
    """`charges[0]` + `tiers[1].up_to` -> `charges[0].tiers[1].up_to`."""
    if not prefix or not path:
        return prefix or path
    return prefix + path if path.startswith("[") else f"{prefix}.{path}"


#: Longest echo of a refused value in an error message: enough to recognise it, short enough
#: that a 10,000-character value does not bury the reason.
ECHO_LIMIT = 60


def echo(value: object, limit: int = ECHO_LIMIT) -> str:
    """How an error message quotes a refused value: `repr` for text, `str` otherwise, cut to
    `limit` characters with an ellipsis (`'aaaa…' (10000 characters)`)."""
    text = repr(value) if isinstance(value, str) else str(value)
    if len(text) <= limit:
        return text
    size = f" ({len(value)} characters)" if isinstance(value, str) else ""
    return text[: limit - 1] + "…" + size
