"""`meter periods close --period P` before P has ended: refused with when it ends (nothing to
close), or, when it has ended for only some customers (time zones, anchor days), closed for
those, with a note about the others. "Now" is a parameter: every instant here is derived from
the periods' own boundaries, so the tests hold on any day."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from typer.testing import CliRunner

from cli import periods as periods_cli
from pricing.periods import period_for_label
from services import invoice_lifecycle as invoices
from services.periods import PeriodNotEnded
from storage.invoices import jobs as invoice_jobs
from tasks import billing
from tests.billing.helpers import customer, utc

pytestmark = pytest.mark.usefixtures("plans")

runner = CliRunner()
EAST, WEST = "Pacific/Kiritimati", "Pacific/Honolulu"  # UTC+14 and UTC−10: 24 hours apart
LABEL = "2026-01"


def end_of(label: str, timezone: str, anchor_day: int | None = None) -> datetime:
    return period_for_label(label, timezone=timezone, anchor_day=anchor_day).end


@pytest.fixture
def east_and_west(plans: None) -> None:
    customer("east", "small", starts_at=utc(2025, 12, 1), timezone=EAST)
    customer("west", "small", starts_at=utc(2025, 12, 1), timezone=WEST)


@pytest.mark.usefixtures("east_and_west")
def test_a_period_that_has_ended_for_no_one_is_refused_with_when_it_ends(
    db: psycopg.Connection,
) -> None:
    before = end_of(LABEL, EAST) - timedelta(microseconds=1)
    with pytest.raises(PeriodNotEnded) as refused:
        periods_cli.close_period(LABEL, inline=True, progress=False, now=before)
    assert str(refused.value) == (
        "period: 2026-01 has not ended yet (it ends 2026-02-01T00:00:00+14:00 for"
        " Pacific/Kiritimati customers at the earliest, 2026-02-01T00:00:00-10:00 for"
        " Pacific/Honolulu customers last)"
    )
    with pytest.raises(PeriodNotEnded):  # the service the actor runs refuses it the same way
        billing.fan_out_period(LABEL, now=before)
    assert db.execute("SELECT count(*) FROM invoice_jobs").fetchone() == (0,)
    assert invoices.list_invoices() == []


@pytest.mark.usefixtures("east_and_west")
def test_a_period_ended_for_some_customers_is_closed_for_those() -> None:
    summary = periods_cli.close_period(LABEL, inline=True, progress=False, now=end_of(LABEL, EAST))
    assert summary.to_json()["jobs"] == 1
    assert (summary.not_ended, summary.not_ended_until) == (
        1,
        "2026-02-01T00:00:00-10:00 for Pacific/Honolulu customers",
    )
    assert [invoice.customer_id for invoice in invoices.list_invoices()] == ["east"]

    summary = periods_cli.close_period(LABEL, inline=True, progress=False, now=end_of(LABEL, WEST))
    assert (len(summary.job_ids), summary.not_ended) == (2, 0)
    assert sorted(invoice.customer_id for invoice in invoices.list_invoices()) == ["east", "west"]


def test_one_zone_names_one_end_and_anchor_days_are_named() -> None:
    customer("utc", "small", starts_at=utc(2025, 12, 1))
    customer("mid", "small", starts_at=utc(2025, 12, 15), anchor_day=15)
    # before 1 February (UTC) neither the calendar January nor the 15 Jan – 15 Feb period ended
    before = end_of(LABEL, "UTC") - timedelta(microseconds=1)
    with pytest.raises(PeriodNotEnded, match=r"\(it ends 2026-02-01T00:00:00\+00:00 for UTC"
                       r" customers at the earliest, 2026-02-15T00:00:00\+00:00 for UTC customers"
                       r" with anchor day 15 last\)"):  # fmt: skip
        billing.fan_out_period(LABEL, now=before)
    # the calendar customers' period has ended: closed; the anchored one is still running
    job_ids = billing.fan_out_period(LABEL, now=end_of(LABEL, "UTC"))
    assert [job.customer_id for job in invoice_jobs.get_jobs(job_ids)] == ["utc"]


def test_the_command_exits_non_zero_for_a_future_period() -> None:
    customer("utc", "small", starts_at=utc(2025, 12, 1))
    # a label in next year is in the future whatever today is
    future = f"{datetime.now(UTC).year + 1}-06"
    result = runner.invoke(periods_cli.app, ["close", "--period", future, "--json"])
    assert result.exit_code != 0
    assert isinstance(result.exception, PeriodNotEnded)
    assert str(result.exception).startswith(f"period: {future} has not ended yet (it ends ")
    assert result.stdout == ""  # no summary printed as if something had been closed


@pytest.mark.usefixtures("east_and_west")
def test_the_command_notes_customers_whose_period_is_still_running(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(periods_cli, "clock", lambda: end_of(LABEL, EAST))
    result = runner.invoke(periods_cli.app, ["close", "--period", LABEL, "--inline", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["jobs"], summary["not_ended"]) == (1, 1)
    assert summary["not_ended_until"] == "2026-02-01T00:00:00-10:00 for Pacific/Honolulu customers"
    assert "period 2026-01 has not ended yet for 1 customer(s)" in result.stderr


def test_the_close_actor_logs_a_future_period_and_does_not_retry(
    caplog: pytest.LogCaptureFixture,
) -> None:
    customer("utc", "small", starts_at=utc(2025, 12, 1))
    future = f"{datetime.now(UTC).year + 1}-06"  # in the future whatever today is
    billing.close_period(future)  # returns: raising would only retry what cannot succeed yet
    assert f"close {future} refused: period: {future} has not ended yet" in caplog.text
    assert invoices.list_invoices() == []
