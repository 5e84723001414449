"""`meter ops failed` / `meter ops retry`: invoice jobs whose retries ran out, with their
errors, and running them again safely (regenerating an invoice that exists changes nothing).
`meter ops rejected`: the events ingest refused, with the reason and the field at fault.
`meter ops notifications` / `meter ops redeliver`: webhook deliveries that wait or died, and
sending them again."""

from __future__ import annotations

from datetime import UTC, datetime

import typer

from cli.output import CliError, console, print_json, print_table

app = typer.Typer(help="Operations: failed invoice jobs and re-running them.")


@app.callback()
def _group() -> None:
    """Operations."""


@app.command("failed")
def failed(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Invoice jobs that failed, with their last error."""
    from storage.invoices.jobs import failed_jobs

    jobs = failed_jobs()
    if as_json:
        print_json([job.to_json() for job in jobs])
        return
    print_table(
        f"Failed invoice jobs ({len(jobs)})",
        ["job", "customer", "period", "attempts", "last error"],
        [(j.id, j.customer_id, j.period_label, j.attempts, j.last_error) for j in jobs],
    )
    if jobs:
        console.print("re-run them with `meter ops retry --all` (or by job id)")


@app.command("retry")
def retry(
    job_ids: list[int] = typer.Argument(None, metavar="JOB_ID...", help="Jobs to run again."),
    all_failed: bool = typer.Option(False, "--all", help="Every failed job."),
    inline: bool = typer.Option(False, "--inline", help="Run them here, without workers."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Re-enqueue invoice jobs (or run them with --inline)."""
    from storage.invoices.jobs import get_jobs
    from tasks.billing import retry_jobs

    if bool(job_ids) == all_failed:
        raise CliError("give job ids or --all (not both)")
    jobs = retry_jobs(None if all_failed else job_ids, inline=inline)
    if inline and jobs:
        jobs = get_jobs([job.id for job in jobs])
    if as_json:
        print_json([job.to_json() for job in jobs])
        return
    verb = "ran" if inline else "re-enqueued"
    console.print(f"{verb} {len(jobs)} invoice job(s)")
    for job in jobs:
        console.print(f"  job {job.id} {job.customer_id} {job.period_label}: {job.status}")


@app.command("rejected")
def rejected(
    reason: str = typer.Option(None, "--reason", help="Only this reason (e.g. unknown_metric)."),
    customer: str = typer.Option(None, "--customer", help="Only this customer's events."),
    limit: int = typer.Option(50, "--limit", min=1, help="At most this many, newest first."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Rejected events, newest first: reason, detail, customer, metric, event id, time."""
    from storage.ledger.rejections import list_rejected

    found = list_rejected(reason=reason, customer_id=customer, limit=limit)
    if as_json:
        print_json([r.to_json() for r in found])
        return
    print_table(
        f"Rejected events ({len(found)}, newest first)",
        ["received", "reason", "customer", "metric", "event id", "detail"],
        [
            (
                f"{r.received_at:%Y-%m-%d %H:%M:%S}",
                r.reason,
                r.customer_id,
                r.metric,
                r.event_id,
                r.detail,
            )
            for r in found
        ],
    )
    if len(found) == limit:
        console.print(f"(showing the latest {limit}; --limit shows more)")


@app.command("notifications")
def notifications(
    dead: bool = typer.Option(False, "--dead", help="Only dead ones (retries exhausted)."),
    include_delivered: bool = typer.Option(False, "--all", help="Delivered ones too."),
    limit: int = typer.Option(100, "--limit", min=1, help="At most this many, oldest first."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Webhook notifications not delivered yet (pending and dead), oldest first: topic,
    customer, endpoint, attempts, last error, next attempt."""
    from storage.outbox import list_notifications

    if dead and include_delivered:
        raise CliError("--dead", "cannot be combined with --all")
    found = list_notifications(dead_only=dead, include_delivered=include_delivered, limit=limit)
    if as_json:
        print_json([n.to_json() for n in found])
        return
    kind = "Dead" if dead else ("All" if include_delivered else "Undelivered")
    # A dead or delivered row has no next attempt: the column is only for waiting ones.
    when = "dead at (UTC)" if dead else "next attempt (UTC)"
    print_table(
        f"{kind} notifications ({len(found)})",
        ["id", "topic", "customer", "endpoint", "status", "attempts", when, "last error"],
        [
            (
                n.id,
                n.topic,
                n.customer_id,
                n.endpoint,
                n.status,
                n.attempts,
                _moment(
                    n.dead_at if dead else (n.next_attempt_at if n.status == "pending" else None)
                ),
                n.last_error,
            )
            for n in found
        ],
        whole=("id", "topic", "customer"),
    )
    if any(n.status == "dead" for n in found):
        console.print("send them again with `meter ops redeliver --all` (or by id)")
    if len(found) == limit:
        console.print(f"(showing the first {limit}; --limit shows more)")


def _moment(at: datetime | None) -> str:
    return "" if at is None else f"{at.astimezone(UTC):%Y-%m-%d %H:%M:%S}"


@app.command("redeliver")
def redeliver(
    ids: list[int] = typer.Argument(None, metavar="ID...", help="Notifications to send again."),
    all_dead: bool = typer.Option(False, "--all", help="Every dead notification."),
    inline: bool = typer.Option(
        False, "--inline", help="Deliver them here and now, without workers."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Make notifications due again with a fresh round of attempts (dead ones, or pending ones
    waiting out a backoff), then ask a worker to deliver them (or deliver here: --inline)."""
    from storage import outbox

    if bool(ids) == all_dead:
        raise CliError("ID", "give notification ids or --all (not both)")
    if ids:
        unknown = sorted(set(ids) - outbox.existing_ids(ids))
        if unknown:
            raise CliError("ID", f"no notification {', '.join(map(str, unknown))}")
    made_due = outbox.redeliver(None if all_dead else ids)
    skipped = sorted(set(ids or []) - set(made_due))
    document: dict[str, object] = {"redelivered": made_due, "already_delivered": skipped}
    if made_due:
        document["delivery"] = _deliver_now() if inline else _request_delivery()
    if as_json:
        print_json(document)
        return
    console.print(f"{len(made_due)} notification(s) due again")
    if skipped:
        console.print(f"already delivered, left alone: {', '.join(map(str, skipped))}")
    delivery = document.get("delivery")
    if isinstance(delivery, dict):
        console.print(
            f"delivered {delivery['delivered']}, failed {delivery['failed']}"
            f" ({delivery['dead']} dead)"
        )
    elif delivery:
        console.print(str(delivery))


def _deliver_now() -> dict[str, int]:
    from services.notifications import deliver_configured
    from storage.settings import get_settings

    report = deliver_configured(get_settings())
    return {"delivered": report.delivered, "failed": report.failed, "dead": report.dead}


def _request_delivery() -> str:
    from tasks.notify import request_delivery

    try:
        request_delivery()
    except Exception as exc:  # the scheduler's sweep sends them anyway
        return f"workers not reached ({type(exc).__name__}); the scheduler's sweep delivers them"
    return "a worker delivers them now"
