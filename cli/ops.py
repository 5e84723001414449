"""`meter ops failed` / `meter ops retry`: invoice jobs whose retries ran out, with their
errors, and running them again safely (regenerating an invoice that exists changes nothing)."""

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
    from storage.invoice_jobs import failed_jobs

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
    from storage.invoice_jobs import get_jobs
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
