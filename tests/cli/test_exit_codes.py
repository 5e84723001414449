"""One root error: what the user can fix exits 2 with `error: field: reason`, a bug exits 1
with its traceback (a stray ValueError or ArithmeticError is a bug, not a user error)."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

import pytest
import typer

import cli.main
from cli.output import CliError
from pricing.errors import ConfigError, MeterlineError, PlanError, UserError
from pricing.events import EventError
from services.periods import PeriodNotEnded
from storage.errors import Conflict, InvalidInput, NotFound, SchemaNotMigrated, StorageError
from tasks.recorder import BufferFull


def command_raising(monkeypatch: pytest.MonkeyPatch, error: Callable[[], BaseException]) -> None:
    """`meter` becomes one command that raises `error()`."""
    app = typer.Typer()

    @app.command()
    def fails() -> None:
        raise error()

    monkeypatch.setattr(cli.main, "app", app)
    monkeypatch.setattr("sys.argv", ["meter"])


@pytest.mark.parametrize(
    "error",
    [
        lambda: CliError("--limit", "must be at least 1"),
        lambda: InvalidInput("limit: must be at least 1"),
        lambda: NotFound("customer_id: no customer 'cus_9'"),
        lambda: PlanError([("charges[0].model", "unknown model 'x'")]),
        lambda: SchemaNotMigrated("database", "schema is not migrated (run meter db migrate)"),
    ],
)
def test_a_user_error_exits_2_with_field_and_reason(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    error: Callable[[], UserError],
) -> None:
    command_raising(monkeypatch, error)
    with pytest.raises(SystemExit) as exited:
        cli.main.main()
    assert exited.value.code == 2
    expected = error()
    err = capsys.readouterr().err
    assert err.strip() == f"error: {expected.field}: {expected.reason}"
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "error", [lambda: ValueError("a bug"), lambda: Decimal("abc"), lambda: KeyError("x")]
)
def test_anything_else_is_a_bug_and_keeps_its_traceback(
    monkeypatch: pytest.MonkeyPatch, error: Callable[[], BaseException]
) -> None:
    command_raising(monkeypatch, error)  # Decimal("abc") raises InvalidOperation itself
    with pytest.raises((ValueError, ArithmeticError, KeyError)):
        cli.main.main()


def test_every_error_meterline_raises_on_purpose_has_one_root() -> None:
    users = [PlanError, EventError, InvalidInput, NotFound, Conflict, PeriodNotEnded, CliError]
    users += [ConfigError, SchemaNotMigrated]
    for cls in users:
        assert issubclass(cls, UserError) and issubclass(cls, ValueError), cls
    for cls in [*users, StorageError, BufferFull]:
        assert issubclass(cls, MeterlineError), cls
    assert issubclass(NotFound, KeyError)  # callers that look rows up still catch KeyError
    error = UserError("quantity: must be a finite number")
    assert (error.field, error.reason) == ("quantity", "must be a finite number")
