"""`meter quote` as a user runs it: a separate process, no server, the contract JSON on stdout,
errors on stderr with a non-zero exit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
METER = [sys.executable, "-c", "from cli.main import main; main()"]


def meter(*args: str) -> subprocess.CompletedProcess[str]:
    # No server URLs and a data dir that does not exist: quote must not need any server.
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env["METER_DATA_DIR"] = "/nonexistent/meterline"
    return subprocess.run(
        [*METER, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


def test_quote_prints_the_contract_json_for_the_api_plan() -> None:
    result = meter(
        "quote", "--plan", "examples/plans/api.yaml", "--usage", "api_calls=150000", "--json"
    )
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    usage_line = document["lines"][1]
    assert usage_line["metric"] == "api_calls" and usage_line["model"] == "graduated"
    assert [(t["quantity"], t["unit_amount"], t["amount"]) for t in usage_line["tiers"]] == [
        ("10000", "0", "0"),
        ("90000", "0.01", "900"),
        ("50000", "0.005", "250"),
    ]
    assert usage_line["amount"] == "1150.00"
    assert (document["subtotal"], document["tax"], document["total"]) == (
        "1150.00",
        "0.00",
        "1150.00",
    )
    assert document["usage"]["api_calls"] == "150000"


def test_a_bad_plan_is_refused_on_stderr_naming_the_field(tmp_path: Path) -> None:
    plan = tmp_path / "bad.yaml"
    plan.write_text(
        "code: bad\nname: Bad\ncurrency: USD\nmetrics: {calls: {aggregation: sum}}\n"
        "charges:\n  - metric: calls\n    model: graduated\n    tiers:\n"
        "      - {up_to: 100, unit_amount: '1'}\n      - {up_to: 50, unit_amount: '1'}\n"
        "      - {up_to: null, unit_amount: '1'}\n"
    )
    result = meter("quote", "--plan", str(plan), "--usage", "calls=1", "--json")
    assert result.returncode == 2
    assert result.stdout == ""
    assert "charges[0].tiers[1].up_to" in result.stderr


def test_an_unknown_metric_in_usage_is_refused() -> None:
    result = meter("quote", "--plan", "examples/plans/api.yaml", "--usage", "nope=1")
    assert result.returncode == 2 and "nope" in result.stderr
