"""`meter ops replay-failed`: re-ingest batches whose retries ran out, once fixed."""

from __future__ import annotations

import typer

from cli.output import console, print_json


def replay_failed(
    inline: bool = typer.Option(False, "--inline", help="Ingest here instead of queueing."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Send every kept batch through ingest again (same batch id and event ids: nothing can be
    counted twice; a bad event in it becomes a rejected event). A batch that is still not an
    object of events stays kept; one whose ingest fails again stays kept, with the error
    printed, and the command exits 1 after trying the others."""
    import tasks.ingest
    from storage.ledger.batches import failed_batches, mark_replayed

    replayed: list[int] = []
    kept: list[int] = []
    errors: list[dict[str, object]] = []
    for failed in failed_batches():
        payload = failed["payload"]
        if not isinstance(payload, dict) or not isinstance(payload.get("events"), list):
            kept.append(failed["id"])
            continue
        try:
            if inline:
                tasks.ingest.ingest_events(payload)
            else:
                tasks.ingest.ingest_events.send(payload)
        except Exception as exc:  # e.g. the database or the broker is down: try the others
            kept.append(failed["id"])
            errors.append({"id": failed["id"], "error": f"{type(exc).__name__}: {exc}"})
            continue
        mark_replayed(failed["id"])
        replayed.append(failed["id"])
    if as_json:
        print_json({"replayed": replayed, "kept": kept, "errors": errors})
    else:
        console.print(
            f"replayed {len(replayed)} batch(es); {len(kept) - len(errors)} malformed kept"
        )
    for error in errors:
        typer.echo(f"error: failed batch {error['id']}: {error['error']}", err=True)
    if errors:
        raise typer.Exit(1)
