"""`meter ops stats`: what ingest has done since the start, and what waits in the queues."""

from __future__ import annotations

import typer

from cli.output import console, err_console, print_json, print_table


def stats(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Events accepted, duplicates, rejected by reason; queue depths; oldest message age;
    a warning when the broker keeps queued batches only in memory."""
    from storage.ledger.batches import stats as ingest_stats
    from tasks.queues import broker_warnings, queue_stats

    document = {"events": ingest_stats(), **queue_stats(), "warnings": broker_warnings()}
    for warning in document["warnings"]:
        err_console.print(f"warning: {warning}", style="yellow", soft_wrap=True)
    if as_json:
        print_json(document)
        return
    events = document["events"]
    rows = [("accepted", events["accepted"]), ("duplicates", events["duplicates"])]
    rows += [(f"rejected: {reason}", n) for reason, n in sorted(events["rejected"].items())]
    print_table("Ingest since start", ["", "events"], rows)
    print_table(
        "Queues (what waits here lives only in the broker)",
        ["queue", "messages"],
        list(document["queues"].items()),
    )
    console.print(f"oldest waiting message: {document['oldest_message_age_s']} s")
