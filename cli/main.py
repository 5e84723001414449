"""The `meter` command: one Typer app, one module per command group."""

from __future__ import annotations

import sys

import typer

from cli import (
    customers,
    db,
    demo,
    events,
    invoices,
    ops,
    periods,
    plans,
    quote,
    reconcile,
    replay,
    scheduler,
    stats,
    usage,
    worker,
)
from cli.output import CliError, err_console

app = typer.Typer(
    help="Meterline: usage metering and billing.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("quote")(quote.quote)
app.command("demo")(demo.demo)
app.add_typer(plans.app, name="plans")
app.add_typer(customers.app, name="customers")
app.add_typer(db.app, name="db")
app.add_typer(events.app, name="events")
app.add_typer(invoices.app, name="invoices")
app.add_typer(periods.app, name="periods")
app.command("usage")(usage.usage)
app.command("worker")(worker.worker)
app.command("scheduler")(scheduler.scheduler)

ops_app = typer.Typer(help="Operations: ingest stats, failed jobs.", no_args_is_help=True)
ops_app.command("stats")(stats.stats)
ops_app.command("reconcile")(reconcile.reconcile)
ops_app.command("failed")(ops.failed)
ops_app.command("retry")(ops.retry)
ops_app.command("replay-failed")(replay.replay_failed)
app.add_typer(ops_app, name="ops")


def _user_errors() -> tuple[type[BaseException], ...]:
    """Errors that are the user's to fix: a message on stderr, no traceback."""
    from pricing.plans import PlanError
    from storage.errors import Conflict, InvalidInput, NotFound

    return (CliError, PlanError, NotFound, Conflict, InvalidInput, ValueError, FileNotFoundError)


def main() -> None:
    try:
        app()
    except _user_errors() as exc:
        err_console.print(f"[red]error:[/red] {exc}", highlight=False, markup=True)
        sys.exit(1)
