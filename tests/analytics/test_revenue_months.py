"""The revenue pre-aggregates (`storage.analytics.revenue_months`, migration 0017) hold what the
invoices say after every change an invoice goes through: finalized, an adjustment for late
usage, voided with a credit note, reissued, paid, and the same generation and finalization run
again. The scenario (tests/analytics/scenario.py) already finalizes, adjusts, voids and
reissues; these tests go on from there."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from services import invoice_lifecycle as invoices
from services.credit_notes import list_credit_notes
from storage import db
from storage.analytics import revenue_months
from storage.migrate import MIGRATIONS_DIR
from tests.analytics.scenario import FEBRUARY, JANUARY, LATER, build

Rows = tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]


def kept_equals_invoices() -> Rows:
    """The kept rows, after checking that they equal the rows computed from the invoices."""
    with db.connection() as conn:
        kept = revenue_months.kept(conn)
        recomputed = revenue_months.recomputed(conn)
    assert kept == recomputed
    return kept


def customer_month(rows: Rows, month: str, customer_id: str) -> list[tuple[Any, ...]]:
    return [r for r in rows[0] if r[0] == month and r[2] == customer_id]


def test_finalized_invoices_adjustments_and_a_reissue_are_kept_once(clean_state: None) -> None:
    build()
    rows = kept_equals_invoices()
    (a,) = customer_month(rows, "2026-02", "a")
    # month, currency, customer, plan, months, invoices, subtotal, tax, total, base, lines
    assert a[5:] == (
        1,
        Decimal("210.00"),
        Decimal("21.00"),
        Decimal("231.00"),
        Decimal("100.00"),
        Decimal("210.00"),
    )
    (b,) = customer_month(rows, "2026-02", "b")  # voided and reissued: once
    assert (b[5], b[6]) == (1, Decimal("100.00"))
    assert customer_month(rows, "2026-02", "d") == []  # a draft is not revenue
    lines = {(r[0], r[1].strip(), r[2], r[3]): r[4:] for r in rows[1]}
    assert lines[("2026-02", "USD", "adjustment", "api_calls")] == (
        1,
        Decimal("10.00"),
        Decimal("100"),
    )
    assert lines[("2026-02", "USD", "base_fee", "")][:2] == (3, Decimal("300.00"))


def test_a_void_with_its_credit_note_takes_the_invoice_away_and_a_reissue_puts_it_back(
    clean_state: None,
) -> None:
    ids = build()
    voided = invoices.void(ids["e:2026-02"], now=LATER)
    assert [note.invoice_id for note in list_credit_notes("e")] == [voided.id]
    rows = kept_equals_invoices()
    assert customer_month(rows, "2026-02", "e") == []
    assert not any(r[0] == "2026-02" and r[1].strip() == "EUR" for r in rows[1])
    reissued = invoices.finalize(invoices.reissue(voided.id, now=LATER).id, now=LATER)
    rows = kept_equals_invoices()
    (e,) = customer_month(rows, "2026-02", "e")
    assert (e[5], e[6]) == (1, reissued.subtotal)


def test_paid_voided_drafts_and_runs_again_change_nothing(clean_state: None) -> None:
    ids = build()
    before = kept_equals_invoices()
    invoices.mark_paid(ids["a:2026-02"], now=LATER)
    invoices.mark_paid(ids["a:2026-02"], now=LATER)
    invoices.void(ids["d:2026-02"], now=LATER)  # a draft was never counted
    invoices.finalize(ids["a:2026-01"], now=LATER)
    invoices.finalize(ids["b:2026-02"], now=LATER)
    invoices.generate("e", JANUARY, now=LATER)
    invoices.generate("b", FEBRUARY, now=LATER)
    assert kept_equals_invoices() == before


def test_the_migrations_backfill_and_rebuild_equal_what_is_kept(clean_state: None) -> None:
    build()
    kept = kept_equals_invoices()
    script = (MIGRATIONS_DIR / "0017_revenue_months.sql").read_text()
    backfill = [s for s in script.split(";\n") if s.strip().startswith("INSERT INTO revenue_")]
    assert len(backfill) == 2
    with db.connection() as conn:
        with conn.transaction(force_rollback=True):
            conn.execute("DELETE FROM revenue_months")
            conn.execute("DELETE FROM revenue_month_lines")
            for statement in backfill:
                conn.execute(statement)
            assert revenue_months.kept(conn) == kept
        with conn.transaction(force_rollback=True):
            revenue_months.rebuild(conn)
            assert revenue_months.kept(conn) == kept
