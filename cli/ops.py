"""`meter ops failed` / `meter ops retry`: invoice jobs whose retries ran out, with their
errors, and running them again safely (regenerating an invoice that exists changes nothing).
`meter ops rejected`: the events ingest refused, with the reason and the field at fault."""

from __future__ import annotations

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
