"""Meterline's errors: one root, `MeterlineError`, so a caller catches what it can handle and
lets the rest show its traceback. They live here, in the lowest layer, so that every layer
(pricing, storage, services, tasks, the CLI) can raise and catch them.

`UserError` is input the user can fix (a bad field, an unknown id, a missing setting): it names
the field and the reason, and the `meter` command prints it as `error: field: reason` with exit
status 2. It is also a `ValueError`, so `record_usage` and the validators keep raising what
their callers already catch.
"""

from __future__ import annotations


class MeterlineError(Exception):
    """Root of every error Meterline raises on purpose."""


class UserError(MeterlineError, ValueError):
    """Input the user can fix: `field` names what is wrong (may be empty), `reason` why.

    `UserError("field", "reason")`, or one message `UserError("field: reason")` as the older
    callers raise it (split at the first `": "`)."""

    def __init__(self, field: str, reason: str | None = None) -> None:
        if reason is None:
            head, sep, tail = field.partition(": ")
            field, reason = (head, tail) if sep and " " not in head else ("", field)
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}" if field else reason)


class ConfigError(UserError):
    """A setting that is missing, malformed or does not match the servers (a broker URL's
    scheme, the webhook URL or secret, a database whose schema is not migrated)."""


class PlanError(UserError):
    """A plan that cannot be used, with the reasons as (field path, reason) pairs.

    Paths use the plan file's own names (`charges[0].tiers[1].up_to`, `metrics.seats.field`),
    so the message points at the line to fix. Validators inside the plan models raise it with
    paths relative to themselves; `load_plan` prefixes them with where the model sits.
    """

    def __init__(self, errors: list[tuple[str, str]]) -> None:
        self.errors = list(errors)
        if len(self.errors) == 1:
            super().__init__(*self.errors[0])
        else:
            super().__init__("", "\n".join(_line(path, reason) for path, reason in self.errors))


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
