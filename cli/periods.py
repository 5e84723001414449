"""`meter periods close`: close a billing period now, as the scheduler does when one ends: one
invoice job per customer, then (with `--wait`) a progress bar until every job is done.

Without workers running (the embedded demo), `--inline` runs the jobs in this process instead of
sending them, so closing and waiting always completes.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from cli.output import CliError, console, err_console, print_json
from pricing.errors import echo

app = typer.Typer(help="Billing periods: close one now.")

_POLL_S = 0.5


@app.callback()
def _group() -> None:
    """Billing periods, in each customer's own time zone."""


@dataclass
class CloseSummary:
    """What a close did: its jobs and how many ended in each status."""

    period: str | None
    job_ids: list[int]
    counts: dict[str, int] = field(default_factory=dict)
    failed: list[dict[str, Any]] = field(default_factory=list)
    not_ended: int = 0  # customers whose period with this label is still running
    not_ended_until: str | None = None  # when the last of those ends (local time)

    def to_json(self) -> dict[str, Any]:
        return {
            "period": self.period,
            "jobs": len(self.job_ids),
            "status": self.counts,
            "failed": self.failed,
            "not_ended": self.not_ended,
            "not_ended_until": self.not_ended_until,
        }


@app.command("close")
def close(
    period: str | None = typer.Option(
        None, "--period", help="YYYY-MM (or YYYY for yearly plans); default: the last ended one."
    ),
    wait: bool = typer.Option(False, "--wait", help="Wait until every invoice job is done."),
    inline: bool = typer.Option(False, "--inline", help="Run the jobs here, without workers."),
    timeout: float = typer.Option(600.0, "--timeout", help="Seconds --wait waits at most."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Fan out one invoice job per customer whose period has ended."""
    summary = close_period(period, wait=wait, inline=inline, timeout=timeout, now=clock())
    if as_json:
        print_json(summary.to_json())
    else:
        counts = ", ".join(f"{n} {status}" for status, n in summary.counts.items() if n)
        console.print(f"period {summary.period or '(last ended)'}: {len(summary.job_ids)} jobs")
        console.print(f"  {counts or 'none'}")
        if not (wait or inline) and summary.job_ids:
            console.print("  the workers generate the invoices (`meter worker`)")
    if summary.not_ended:
        err_console.print(
            f"note: period {summary.period} has not ended yet for {summary.not_ended}"
            f" customer(s) (the last ends {summary.not_ended_until}); the scheduler closes"
            " each one when it ends",
            highlight=False,
        )
    if summary.failed:
        for job in summary.failed:
            err_console.print(f"job {job['id']} {job['customer_id']}: {job['last_error']}")
        raise typer.Exit(1)


def clock() -> datetime:
    """The command's "now" (tests set it from period boundaries)."""
    return datetime.now(UTC)


def close_period(
    period: str | None,
    *,
    wait: bool = False,
    inline: bool = False,
    timeout: float = 600.0,
    progress: bool = True,
    now: datetime | None = None,
) -> CloseSummary:
    """Close `period` (None: each customer's last ended period) as of `now`. `inline` runs
    the jobs in this process; `wait` polls the job rows until the workers are done. A period
    that has ended for none of its customers yet is refused, saying when it ends; one that
    has ended for some is closed for those. For `meter demo` too."""
    from services import periods
    from storage.invoices import jobs as invoice_jobs
    from tasks import billing

    if period is not None and not re.fullmatch(r"\d{4}(-(0[1-9]|1[0-2]))?", period):
        raise CliError(f"--period: expected YYYY-MM (or YYYY), got {echo(period)}")
    now = now or clock()
    selection = periods.select_for_label(period, now)
    bounds = selection.earliest_and_latest()
    until = bounds[1].describe() if bounds else None
    if inline:
        jobs, _ = invoice_jobs.open_jobs(selection.ended, now)
        job_ids = [job.id for job in jobs]
        todo = [job for job in jobs if job.status != "succeeded"]
        with _progress(progress) as bar:
            task = bar.add_task("invoices", total=len(jobs), completed=len(jobs) - len(todo))
            billing.run_jobs_inline(todo, on_done=lambda _: bar.advance(task), now=now)
    else:
        job_ids = billing.fan_out_keys(selection.ended, now)
        if wait:
            _wait(job_ids, timeout, progress)
    counts = invoice_jobs.status_counts(job_ids)
    failed = []
    if counts["failed"] and (wait or inline):
        failed = [j.to_json() for j in invoice_jobs.get_jobs(job_ids) if j.status == "failed"]
    return CloseSummary(period, job_ids, counts, failed, len(selection.not_ended), until)


def _wait(job_ids: list[int], timeout: float, progress: bool) -> None:
    from storage.invoices import jobs as invoice_jobs

    deadline = time.monotonic() + timeout
    with _progress(progress) as bar:
        task = bar.add_task("invoices", total=len(job_ids))
        while True:
            counts = invoice_jobs.status_counts(job_ids)
            done = counts["succeeded"] + counts["failed"]
            bar.update(task, completed=done)
            if done >= len(job_ids):
                return
            if time.monotonic() > deadline:
                raise CliError(
                    f"--wait: {len(job_ids) - done} of {len(job_ids)} invoice jobs still"
                    f" pending after {timeout:g} s; are the workers running (`meter worker`)?"
                    " Or close with --inline."
                )
            time.sleep(_POLL_S)


def _progress(enabled: bool) -> Progress:
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        disable=not enabled,
    )
