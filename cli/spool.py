"""`meter spool drain`: send the events left in the spool files of dead producers."""

from __future__ import annotations

from pathlib import Path

import typer

from cli.output import CliError, console, print_json

app = typer.Typer(help="The producers' spool (METER_SPOOL_DIR).", no_args_is_help=True)


@app.command("drain")
def drain(
    directory: Path | None = typer.Option(
        None, "--dir", help="Spool directory (default: METER_SPOOL_DIR)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Claim every spool file no live producer holds, queue its events (they keep their ids: a
    re-sent event is counted once) and remove it. Files of live producers are left alone."""
    from storage.settings import get_settings
    from tasks.batch_sender import BatchSender
    from tasks.recorder import DEFAULT_BATCH_SIZE
    from tasks.spool_claim import claim_orphans

    directory = directory or get_settings().METER_SPOOL_DIR
    if directory is None:
        raise CliError("--dir: no spool directory given and METER_SPOOL_DIR is not set")
    if not directory.is_dir():
        raise CliError(f"--dir: {directory} is not a directory")
    report = claim_orphans(directory, BatchSender(None).send, batch_size=DEFAULT_BATCH_SIZE)
    document = {
        "files": report.files,
        "events": report.events,
        "batches": report.batches,
        "busy": report.busy,
    }
    if as_json:
        print_json(document)
        return
    console.print(
        f"queued {report.events} event(s) in {report.batches} batch(es) from "
        f"{len(report.files)} file(s); {report.busy} file(s) held by live producers"
    )
