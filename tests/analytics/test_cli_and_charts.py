"""`meter analytics ...` on the known invoices of tests/analytics/scenario.py: JSON on stdout,
readable tables, charts written as PNG files, bad input as `error: option: reason` (exit 2).
The clock the commands read is pinned to March 2, 2026."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import pytest

import cli.analytics
import cli.main
from tests.analytics.scenario import LATER
from tests.billing.helpers import BIG

pytestmark = pytest.mark.usefixtures("scenario")


@pytest.fixture(autouse=True)
def pinned_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli.analytics, "utc_now", lambda: LATER)


def meter(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, str, str]:
    monkeypatch.setattr("sys.argv", ["meter", "analytics", *args])
    code = 0
    try:
        cli.main.main()
    except SystemExit as exited:
        code = int(exited.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def run_json(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str
) -> Any:
    code, out, err = meter(monkeypatch, capsys, *args, "--json")
    assert code == 0, err
    return json.loads(out)


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from a PNG's header; fails on anything that is not a PNG."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_revenue_json_table_and_chart(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    document = run_json(monkeypatch, capsys, "revenue", "--from", "2026-01", "--to", "2026-02")
    assert document["totals"] == [
        {"currency": "EUR", "revenue": "80.00"},
        {"currency": "USD", "revenue": "780.00"},
    ]
    chart = tmp_path / "revenue.png"
    code, out, _ = meter(
        monkeypatch, capsys, "revenue", "--from", "2026-01", "--to", "2026-03", "--by", "plan",
        "--chart", str(chart),
    )  # fmt: skip
    assert code == 0
    assert "2026-02" in out and "small" in out and "410.00" in out
    assert "estimate from live usage" in out  # March is the current month
    assert f"chart written to {chart}" in out.replace("\n", "")
    width, height = png_size(chart)
    assert width >= 800 and height >= 400
    assert chart.stat().st_size > 10_000


def test_mrr_and_usage_charts(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    mrr_png, usage_png = tmp_path / "mrr.png", tmp_path / "usage.png"
    document = run_json(
        monkeypatch, capsys, "mrr", "--month", "2026-02", "--months", "3", "--chart", str(mrr_png)
    )
    february = next(
        r for r in document["rows"] if r["month"] == "2026-02" and r["currency"] == "USD"
    )
    assert (february["mrr"], february["churned_customers"]) == ("390.00", ["c"])
    document = run_json(
        monkeypatch, capsys, "usage", "--metric", "api_calls", "--from", "2026-01-01",
        "--to", "2026-02-28", "--chart", str(usage_png),
    )  # fmt: skip
    assert document["total"] == "5650"  # January 300 + 600 + 3,000 + 100; February 1,650
    for chart in (mrr_png, usage_png):
        width, height = png_size(chart)
        assert width >= 800 and height >= 400 and chart.stat().st_size > 10_000


def test_overage_customers_near_limit_and_backtest_commands(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    overage = run_json(monkeypatch, capsys, "overage", "--from", "2026-01", "--to", "2026-02")
    assert {t["currency"]: t["share_percent"] for t in overage["totals"]} == {
        "EUR": "50.0",
        "USD": "23.1",
    }
    top = run_json(monkeypatch, capsys, "customers", "--top", "1", "--by", "growth")
    assert [(r["currency"], r["customer_id"]) for r in top["rows"]] == [("EUR", "e"), ("USD", "n")]
    near = run_json(monkeypatch, capsys, "near-limit", "--threshold", "80")
    assert near["rows"] == []  # March: nobody has used anything yet
    plan = tmp_path / "big.yaml"
    plan.write_text(BIG)
    result = run_json(
        monkeypatch, capsys, "backtest", "--plan", str(plan), "--period", "2026-02",
        "--customer", "a", "--customer", "b",
    )  # fmt: skip
    assert result["totals"][0]["difference"] == "105.00"  # a +5, b +100
    code, out, _ = meter(
        monkeypatch, capsys, "backtest", "--plan", str(plan), "--period", "2026-02"
    )
    assert code == 0 and "difference 305.00" in out.replace("\n", " ")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["revenue", "--from", "2026-13"],
            "error: --from: expected a month YYYY-MM, got '2026-13'",
        ),
        (["revenue", "--chart", "out.jpg"], "error: --chart: the chart is a PNG"),
        (["customers", "--by", "size"], "error: --by: must be revenue or growth, got 'size'"),
        (["near-limit", "--threshold", "lots"], "error: --threshold: not a number: 'lots'"),
        (["usage", "--metric", "api_calls", "--from", "May 1"], "error: --from: expected a day"),
        (["mrr", "--trailing", "0"], "error: --trailing: must be at least 1, got 0"),
    ],
)
def test_bad_input_is_an_error_naming_the_option(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    message: str,
) -> None:
    code, out, err = meter(monkeypatch, capsys, *args)
    assert code == 2 and out == ""
    assert err.replace("\n", " ").startswith(message)
