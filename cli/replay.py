"""`meter ops replay-failed`: re-ingest batches whose retries ran out, once fixed."""

from __future__ import annotations

import typer

from cli.output import console, print_json


def replay_failed(
    inline: bool = typer.Option(False, "--inline", help="Ingest here instead of queueing."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Send every kept batch through ingest again (same batch id and event ids: nothing can be
    counted twice). A batch that is still not an object of events stays kept."""
    import tasks.ingest
    from storage.ingest import failed_batches, mark_replayed

    replayed, kept = [], []
    for failed in failed_batches():
        payload = failed["payload"]
        if not isinstance(payload, dict) or not isinstance(payload.get("events"), list):
            kept.append(failed["id"])
            continue
        if inline:
            tasks.ingest.ingest_events(payload)
        else:
            tasks.ingest.ingest_events.send(payload)
        mark_replayed(failed["id"])
        replayed.append(failed["id"])
    if as_json:
        print_json({"replayed": replayed, "kept": kept})
    else:
        console.print(f"replayed {len(replayed)} batch(es); {len(kept)} malformed kept")
