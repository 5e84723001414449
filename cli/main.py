"""The `meter` command: one Typer app, one module per command group."""

from __future__ import annotations

import re
import sys

import typer
from rich.markup import escape

from cli import (
    alerts,
    analytics,
    api_keys,
    customers,
    db,
    demo,
    events,
    invoices,
    limits,
    ops,
    periods,
    plans,
    quote,
    reconcile,
    replay,
    scheduler,
    spool,
    stats,
    usage,
    web,
    worker,
)
from cli.output import err_console
from cli.server_errors import server_error
from pricing.errors import UserError

app = typer.Typer(
    help="Meterline: usage metering and billing.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("quote")(quote.quote)
app.command("demo")(demo.demo)
app.add_typer(plans.app, name="plans")
app.add_typer(alerts.app, name="alerts")
app.add_typer(customers.app, name="customers")
app.add_typer(db.app, name="db")
app.add_typer(events.app, name="events")
app.add_typer(invoices.app, name="invoices")
app.add_typer(periods.app, name="periods")
app.add_typer(analytics.app, name="analytics")
app.add_typer(limits.app, name="limits")
app.command("usage")(usage.usage)
app.command("worker")(worker.worker)
app.command("scheduler")(scheduler.scheduler)
app.command("web")(web.web)
app.add_typer(api_keys.app, name="api-keys")
app.add_typer(spool.app, name="spool")

ops_app = typer.Typer(
    help="Operations: ingest stats, failed jobs, webhook deliveries.", no_args_is_help=True
)
ops_app.command("stats")(stats.stats)
ops_app.command("reconcile")(reconcile.reconcile)
ops_app.command("failed")(ops.failed)
ops_app.command("retry")(ops.retry)
ops_app.command("replay-failed")(replay.replay_failed)
ops_app.command("rejected")(ops.rejected)
ops_app.command("notifications")(ops.notifications)
ops_app.command("redeliver")(ops.redeliver)
app.add_typer(ops_app, name="ops")


# The exit status of an error the user can fix (bad input, unknown id, a server that cannot be
# reached): a message on stderr, no traceback. Anything else is a bug: its traceback, status 1.
USER_ERROR_EXIT = 2


# Any run of this many characters without a space is an echoed value, not words: cut it, so a
# 10,000-digit quantity does not bury the reason (messages quote values with `echo` already;
# this catches the ones that do not).
_LONG_RUN = re.compile(r"\S{200,}")


def _cut(match: re.Match[str]) -> str:
    text = match.group(0)
    return f"{text[:80]}… ({len(text)} characters)"


def main() -> None:
    try:
        app()
    except UserError as exc:
        _fail(str(exc))
    except FileNotFoundError as exc:  # a path given on the command line
        _fail(f"{exc.filename}: {exc.strerror}" if exc.filename else str(exc))
    except Exception as exc:
        message = server_error(exc)
        if message is None:
            raise
        _fail(message)


def _fail(message: str) -> None:
    message = _LONG_RUN.sub(_cut, message)
    err_console.print(
        f"[red]error:[/red] {escape(message)}", highlight=False, markup=True, soft_wrap=True
    )
    sys.exit(USER_ERROR_EXIT)
