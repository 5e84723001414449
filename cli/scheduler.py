"""`meter scheduler`: the scheduler process (what the Procfile's `scheduler:` line runs)."""

from __future__ import annotations

import logging

import typer


def scheduler(
    poll_interval: float = typer.Option(
        5.0,
        "--poll-interval",
        min=0.1,
        help="Seconds between lock attempts on standby and session checks while leading.",
    ),
) -> None:
    """Run the scheduler: one leader (PostgreSQL advisory lock) enqueues period closes, invoice
    finalization, notification delivery and the nightly reconciliation; others wait."""
    from scheduler.process import run
    from storage import db
    from tasks import runtime

    runtime.start()  # the scheduler's start-up: every job it fires goes to this broker
    db.pool()  # a database that is unreachable or behind is refused here, in one line
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    run(poll_interval=poll_interval)
