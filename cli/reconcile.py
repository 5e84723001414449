"""`meter ops reconcile`: check the Redis counters against the rollups and the rollups against
the ledger now, repairing drifted counters (what the nightly job does)."""

from __future__ import annotations

import typer

from cli.output import console, print_json, print_table


def reconcile(
    customers: list[str] = typer.Option([], "--customer", help="Only these customers."),
    check_only: bool = typer.Option(False, "--check-only", help="Report drift, repair nothing."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Reconcile every customer's current and previous billing segment."""
    from services.reconcile import reconcile as run_reconcile

    report = run_reconcile(customer_ids=customers or None, repair=not check_only)
    if as_json:
        print_json(report.to_json())
        return
    console.print(
        f"checked {report.checked} segment(s): {report.drifted} drifted,"
        f" {report.repaired} repaired, {len(report.ledger_mismatches)} ledger mismatch(es)"
    )
    if report.drift:
        print_table(
            "Drifted counters",
            ["customer", "period start", "reason", "repaired"],
            [
                (d["customer_id"], d["period_start"], d["reason"], d["repaired"])
                for d in report.drift
            ],
        )
    if report.ledger_mismatches:
        print_table(
            "Rollups that differ from the ledger",
            ["customer", "period start", "metric", "ledger", "rollup"],
            [
                (m["customer_id"], m["period_start"], m["metric"], m["ledger"], m["rollup"])
                for m in report.ledger_mismatches
            ],
        )
