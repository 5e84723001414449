"""Maintenance actors: the nightly reconciliation of Redis counters with the rollups, and the
nightly pruning of the ingest bookkeeping (dedup index, batch claims) past the accepted window.

Thin on purpose: `services.reconcile` does the checking and repairing, `storage.ledger.retention`
the pruning; these actors run them and say what they found. Drift is a warning (it was repaired); a
rollup that disagrees with the ledger is an error, which reaches Sentry when it is configured. Both
are idempotent: a run again, or a missed night, changes nothing but how much there is to do.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import dramatiq

from services.reconcile import reconcile
from storage.ledger import retention
from tasks import names

log = logging.getLogger(f"meterline.{__name__}")

MAINTENANCE_QUEUE = names.MAINTENANCE_QUEUE  # alias: the name lives in tasks.names


@dramatiq.actor(
    actor_name=names.RECONCILE_COUNTERS,
    queue_name=names.MAINTENANCE_QUEUE,
    max_retries=3,
    time_limit=2 * 3600_000,
)
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


@dramatiq.actor(
    actor_name=names.PRUNE_INGEST_HISTORY,
    queue_name=names.MAINTENANCE_QUEUE,
    max_retries=3,
    time_limit=2 * 3600_000,
)
def prune_ingest_history() -> None:
    """Forget event ids and batch claims received before the accepted window (plus a margin)."""
    report = retention.prune(datetime.now(UTC))
    log.info(
        "pruning before %s: %s event id(s), %s batch claim(s), %s totals row(s) folded",
        report.cutoff.isoformat(),
        report.event_ids,
        report.ingest_batches,
        report.totals_folded,
    )
