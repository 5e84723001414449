"""Maintenance actors: the nightly reconciliation of Redis counters with the rollups.

Thin on purpose: `storage.reconcile` does the checking and repairing; this actor runs it over
every customer and says what it found. Drift is a warning (it was repaired); a rollup that
disagrees with the ledger is an error, which reaches Sentry when it is configured.
"""

from __future__ import annotations

import logging

import dramatiq

from storage.reconcile import reconcile
from tasks.broker import get_broker

log = logging.getLogger("meterline.maintenance")
get_broker()

MAINTENANCE_QUEUE = "maintenance"


@dramatiq.actor(queue_name=MAINTENANCE_QUEUE, max_retries=3, time_limit=2 * 3600_000)
def reconcile_counters() -> None:
    """Check every customer's current and previous segment; repair drifted counters."""
    report = reconcile()
    log.info(
        "reconciliation: %s segment(s) checked, %s drifted, %s repaired",
        report.checked,
        report.drifted,
        report.repaired,
    )
    if report.drifted:
        log.warning("reconciliation: counters drifted: %s", report.drift[:20])
    if report.drifted != report.repaired:
        log.error(
            "reconciliation: %s drifted segment(s) not repaired (retried on the next run)",
            report.drifted - report.repaired,
        )
    for mismatch in report.ledger_mismatches:
        log.error("reconciliation: rollup differs from the ledger: %s", mismatch)
