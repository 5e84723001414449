"""`meter db ...`: database maintenance."""

from __future__ import annotations

import typer

from cli.output import console, print_json

app = typer.Typer(help="Database maintenance.", no_args_is_help=True)


@app.command("migrate")
def migrate(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Apply pending schema migrations (once per release; automatic on start only with
    METER_AUTO_MIGRATE, the default for the embedded PostgreSQL)."""
    from storage.migrate import migrate as apply_migrations

    applied = apply_migrations()
    if as_json:
        print_json({"applied": applied})
    elif applied:
        console.print(f"applied {len(applied)} migration(s): {', '.join(applied)}")
    else:
        console.print("schema is up to date")


@app.command("stop")
def stop(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Stop the embedded PostgreSQL and Redis kept running under METER_DATA_DIR."""
    from storage.embedded import stop_embedded

    stopped = stop_embedded()
    if as_json:
        print_json({"stopped": stopped})
    else:
        console.print(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")
