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
