"""An invoice job whose worker is SIGKILLed in the middle of writing the invoice: nothing of
it is left behind, the job's message comes back, and the customer gets exactly one invoice
whose quantities are the ledger's."""

from __future__ import annotations

from tasks.broker import make_broker
from tests.faults.checks import all_ingested, assert_exactly_once, close_period, invoiced, record
from tests.faults.processes import scalar, wait_for, worker
from tests.metering.helpers import in_previous_period, setup_customer

EVENTS = 2_000


def test_an_invoice_job_killed_mid_invoice_gives_one_invoice(clean_state: None) -> None:
    setup_customer()
    at = in_previous_period()
    broker = make_broker()
    record(broker, EVENTS, at=at)
    with worker("workers.app", processes=1, threads=2):
        wait_for(lambda: all_ingested(EVENTS), timeout=60)

    close_period(broker, at)
    with worker("tests.faults.invoice_fault_worker", queues=("billing",)) as dying:
        wait_for(lambda: dying.poll() is not None, timeout=60)  # killed itself mid-invoice
    assert scalar("SELECT count(*) FROM invoice_jobs") == 1
    assert scalar("SELECT count(*) FROM invoices") == 0  # rolled back with its session
    assert scalar("SELECT count(*) FROM invoice_lines") == 0

    with worker("workers.app", processes=1, threads=2, queues=("billing",)):
        invoice = invoiced(at)  # the dead worker's message, redelivered
        wait_for(
            lambda: scalar("SELECT count(*) FROM invoice_jobs WHERE status = 'succeeded'") == 1
        )
    assert scalar("SELECT count(*) FROM invoice_jobs") == 1
    assert_exactly_once(EVENTS, at, invoice)
