"""Invoice ids on the command line: `meter invoices list` prints them whole, and every command
that takes one accepts a prefix that only one invoice has."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from cli import invoices as invoices_cli
from cli import output
from cli import periods as periods_cli
from services import invoice_lifecycle as invoices
from storage.errors import InvalidInput, NotFound
from tests.billing.helpers import customer, utc

pytestmark = pytest.mark.usefixtures("plans")

runner = CliRunner()
LONG_NAMES = ("customer_with_a_rather_long_id_0001", "customer_with_a_rather_long_id_0002")


@pytest.fixture
def two_invoices() -> tuple[str, str]:
    for name in LONG_NAMES:
        customer(name, "small", starts_at=utc(2025, 12, 1))
    result = runner.invoke(periods_cli.app, ["close", "--period", "2026-01", "--inline"])
    assert result.exit_code == 0, result.output
    first, second = sorted(invoice.id for invoice in invoices.list_invoices())
    return first, second


def test_the_list_table_prints_whole_ids_on_a_narrow_terminal(
    two_invoices: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(output.console, "width", 80)
    result = runner.invoke(invoices_cli.app, ["list"])
    assert result.exit_code == 0, result.output
    assert "…" not in result.stdout
    for value in (*two_invoices, *LONG_NAMES):
        assert value in result.stdout, result.stdout


def test_a_unique_prefix_names_the_invoice(two_invoices: tuple[str, str]) -> None:
    first, second = two_invoices
    # the shortest prefix of `first` that `second` does not share
    differ = next(i for i, (a, b) in enumerate(zip(first, second, strict=True)) if a != b)
    prefix = first[: differ + 1]
    assert not second.startswith(prefix)

    shown = runner.invoke(invoices_cli.app, ["show", prefix, "--json"])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout)["id"] == first
    for command, status in [("finalize", "finalized"), ("mark-paid", "paid")]:
        done = runner.invoke(invoices_cli.app, [command, prefix, "--json"])
        assert done.exit_code == 0, done.output
        assert (json.loads(done.stdout)["id"], json.loads(done.stdout)["status"]) == (first, status)
    voided = runner.invoke(invoices_cli.app, ["void", second[: differ + 1], "--json"])
    assert json.loads(voided.stdout)["status"] == "void"
    reissued = runner.invoke(invoices_cli.app, ["reissue", second[: differ + 1], "--json"])
    assert json.loads(reissued.stdout)["replaces"] == second
    assert invoices.resolve_invoice_id(first) == first  # a whole id is its own answer


def test_an_ambiguous_or_unknown_prefix_is_refused(two_invoices: tuple[str, str]) -> None:
    first, second = two_invoices
    common = "inv_"
    assert first.startswith(common) and second.startswith(common)
    ambiguous = runner.invoke(invoices_cli.app, ["show", common])
    assert ambiguous.exit_code != 0
    assert isinstance(ambiguous.exception, InvalidInput)
    message = str(ambiguous.exception)
    assert message.startswith("invoice_id: prefix 'inv_' matches 2 invoices")
    assert first in message and second in message

    unknown = runner.invoke(invoices_cli.app, ["finalize", "inv_zz"])
    assert isinstance(unknown.exception, NotFound)
    assert str(unknown.exception) == "invoice_id: no invoice 'inv_zz'"
    with pytest.raises(InvalidInput, match="invoice_id: must not be empty"):
        invoices.resolve_invoice_id("")
    # nothing was changed by the refusals
    assert {invoice.status for invoice in invoices.list_invoices()} == {"draft"}
