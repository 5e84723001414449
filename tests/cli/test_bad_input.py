"""Bad input at the command line: one line on stderr, `error: <field>: <reason>`, exit 1, no
traceback, nothing queued or stored.

Run through `cli.main.main`, the `meter` entry point: as a separate process where the process
matters (its environment names an unreachable server; `meter worker` would exec), in this
process otherwise (each process start costs a second or more on a loaded machine), where an
uncaught exception fails the test just as a traceback would show.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from cli.main import main
from tasks import configure_recorder
from tasks.broker import make_broker
from tests.conftest import SessionServers
from tests.metering.helpers import setup_customer

ROOT = Path(__file__).resolve().parents[2]
METER = [sys.executable, "-c", "from cli.main import main; main()"]
API_PLAN = str(ROOT / "examples/plans/api.yaml")
PASSWORD = "hunter2-not-for-logs"


def meter(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`meter ARGS` with this process's environment (the session's servers once
    `test_servers` has run; none otherwise) plus `env`."""
    return subprocess.run(
        [*METER, *args],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


Meter = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Meter:
    """`meter ARGS` in this process: exit code, stdout and stderr as a process would give."""

    def invoke(*args: str) -> subprocess.CompletedProcess[str]:
        capsys.readouterr()
        monkeypatch.setattr(sys, "argv", ["meter", *args])
        with pytest.raises(SystemExit) as exited:
            main()
        out, err = capsys.readouterr()
        code = exited.value.code
        return subprocess.CompletedProcess(args, code if isinstance(code, int) else 1, out, err)

    return invoke


def assert_refused(result: subprocess.CompletedProcess[str], expected: str) -> None:
    """One error line that starts with `error: ` and contains `expected` (field and reason),
    exit status 2 (a user error, not a crash)."""
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("error: "), result.stderr
    assert expected in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def queued(servers: SessionServers) -> int:
    """Messages waiting on the ingest queue of the session's broker (its Redis database)."""
    client = redis.Redis.from_url(servers.redis_url)
    try:
        return int(client.llen("dramatiq:ingest"))
    finally:
        client.close()


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


# --- events -------------------------------------------------------------------------------


@pytest.fixture
def customer(clean_state: None, test_servers: SessionServers) -> Iterator[SessionServers]:
    """cus_1 on the "live" plan (api_calls, storage, login, ...); events recorded in this
    process go to a Redis broker on the session's Redis database, whose queue `queued` reads."""
    setup_customer()
    configure_recorder(broker=make_broker(test_servers.redis_url), flush_interval=0.01)
    yield test_servers
    configure_recorder()


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ({"quantity": "abc"}, ":1: quantity: not a number: 'abc'"),
        ({"timestamp": 1700000000}, ":1: timestamp: must be an RFC 3339 timestamp string"),
        ({"timestamp": "2026-11-27T10:00:00"}, ":1: timestamp: must include a UTC offset"),
        ({"timestamp": "yesterday"}, ":1: timestamp: not an RFC 3339 timestamp"),
    ],
)
def test_events_import_refuses_a_bad_line(
    customer: SessionServers, run: Meter, tmp_path: Path, line: dict[str, object], expected: str
) -> None:
    event = {"customer_id": "cus_1", "metric": "api_calls", **line}
    file = write(tmp_path, "events.jsonl", json.dumps(event) + "\n")
    assert_refused(run("events", "import", file), f"error: {file}{expected}")
    assert queued(customer) == 0


def test_events_import_as_a_process(customer: SessionServers, tmp_path: Path) -> None:
    event = {"customer_id": "cus_1", "metric": "api_calls", "quantity": "abc"}
    file = write(tmp_path, "events.jsonl", json.dumps(event) + "\n")
    assert_refused(meter("events", "import", file), f"error: {file}:1: quantity: not a number")
    assert queued(customer) == 0


def test_events_import_refuses_an_unknown_customer_before_queueing_anything(
    customer: SessionServers, run: Meter, tmp_path: Path
) -> None:
    good = json.dumps({"customer_id": "cus_1", "metric": "api_calls"})
    bad = json.dumps({"customer_id": "nobody", "metric": "api_calls"})
    file = write(tmp_path, "events.jsonl", f"{good}\n{good}\n{bad}\n")
    assert_refused(run("events", "import", file), f"{file}:3: customer_id: no customer 'nobody'")
    assert queued(customer) == 0
    # The same file without its bad line is queued (one batch): the count above is real.
    file = write(tmp_path, "good.jsonl", f"{good}\n{good}\n")
    assert run("events", "import", file).returncode == 0
    assert queued(customer) == 1


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--customer", "nobody"], "error: --customer: no customer 'nobody'"),
        (["--metric", "no_such_metric"], "error: --metric: 'no_such_metric' is not a metric"),
        (["--quantity", "abc"], "error: --quantity: not a number: 'abc'"),
        (
            ["--timestamp", "2026-11-27T10:00:00"],
            "error: --timestamp: timestamp needs a UTC offset",
        ),
        (["--properties", "[" * 5000 + "]" * 5000], "error: --properties: nested too deeply"),
    ],
)
def test_events_send_checks_what_it_can_before_queueing(
    customer: SessionServers, run: Meter, args: list[str], expected: str
) -> None:
    options = {"--customer": "cus_1", "--metric": "api_calls"}
    options.update(zip(args[::2], args[1::2], strict=True))
    result = run("events", "send", *(part for pair in options.items() for part in pair))
    assert_refused(result, expected)
    assert queued(customer) == 0


def test_a_long_echoed_value_is_cut(customer: SessionServers, run: Meter) -> None:
    result = run("events", "send", "--customer", "cus_1", "--metric", "api_calls",
                   "--quantity", "9" * 5000)  # fmt: skip
    assert_refused(result, "error: --quantity: ")
    assert "9" * 100 not in result.stderr and len(result.stderr) < 300


def test_a_naive_time_is_refused_by_customers_create_and_change_plan(
    customer: SessionServers, run: Meter
) -> None:
    naive = "2026-11-01T00:00:00"
    created = run("customers", "create", "cus_2", "--plan", "live", "--starts-at", naive)
    assert_refused(created, "error: --starts-at: timestamp needs a UTC offset")
    changed = run("customers", "change-plan", "cus_1", "--plan", "live", "--at", naive)
    assert_refused(changed, "error: --at: timestamp needs a UTC offset")


# --- unreachable servers ------------------------------------------------------------------


def test_an_unreachable_database_is_named_without_its_password() -> None:
    url = f"postgresql://meter:{PASSWORD}@127.0.0.1:{closed_port()}/meterline"
    result = meter("plans", "list", DATABASE_URL=url)
    safe = url.replace(f":{PASSWORD}@", "@")
    assert_refused(result, f"error: database: cannot connect to {safe} (Connection refused)")
    assert PASSWORD not in result.stdout + result.stderr


def test_a_missing_database_is_named_without_its_password(test_servers: SessionServers) -> None:
    server = test_servers.database_url.rsplit("/", 1)[0].split("://", 1)[1]
    user, _, host = server.rpartition("@")
    url = f"postgresql://{user or 'postgres'}:{PASSWORD}@{host}/meterline_no_such_db"
    result = meter("plans", "list", DATABASE_URL=url)
    assert_refused(result, 'database "meterline_no_such_db" does not exist')
    assert "error: database: cannot connect to postgresql://" in result.stderr
    assert PASSWORD not in result.stdout + result.stderr


def test_an_unreachable_redis_is_named_without_its_password(test_servers: SessionServers) -> None:
    url = f"redis://:{PASSWORD}@127.0.0.1:{closed_port()}/0"
    result = meter("ops", "stats", REDIS_URL=url)
    assert_refused(result, f"error: redis: cannot connect to {url.replace(f':{PASSWORD}@', '')}")
    assert PASSWORD not in result.stdout + result.stderr


# --- meter worker -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["-p", "0"], "error: --processes: must be at least 1, got 0"),
        (["-t", "-2"], "error: --threads: must be at least 1, got -2"),
    ],
)
def test_worker_needs_at_least_one_process_and_thread(args: list[str], expected: str) -> None:
    assert_refused(meter("worker", *args), expected)


# --- plans and quotes (no server at all) --------------------------------------------------

NO_SERVERS = {"DATABASE_URL": "", "REDIS_URL": "", "METER_DATA_DIR": "/nonexistent/meterline"}


def test_a_deeply_nested_plan_as_a_process(tmp_path: Path) -> None:
    plan = write(tmp_path, "plan.json", '{"code": "a", "x": ' + "[" * 100_000 + "]" * 100_000 + "}")
    assert_refused(meter("plans", "apply", plan, **NO_SERVERS), f"error: {plan}: nested deeper")
    assert_refused(meter("quote", "--plan", plan, **NO_SERVERS), f"error: {plan}: nested deeper")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"code": "a", "code": "b", "name": "A", "currency": "USD"}', "code: duplicate key"),
        (
            "code: a\nname: A\ncurrency: USD\nmetrics:\n  m: {aggregation: sum}\n"
            "  m: {aggregation: max}\n",
            "metrics.m: duplicate key (line 6; first on line 5)",
        ),
        (
            "code: " + "a" * 10_000 + "\nname: A\ncurrency: USD\n",
            "code: at most 64 characters, got 10000",
        ),
        (
            "code: a\nname: A\ncurrency: USD\nmetrics: {m: {aggregation: sum}}\n"
            "charges: [{metric: m, model: standard, unit_amount: '1e400'}]\n",
            "charges[0].unit_amount: must be less than 10^18 in absolute value, got '1e400'",
        ),
        (
            '{"code": "a", "x": ' + "[" * 100_000 + "]" * 100_000 + "}",
            "nested deeper than 20 levels",
        ),
        (
            "code: a\nx: " + "[" * 100_000 + "]" * 100_000 + "\n",
            "x[0][0]…: nested deeper than 20 levels (line 2)",
        ),
    ],
    ids=["json-duplicate", "yaml-duplicate", "long-code", "1e400", "deep-json", "deep-yaml"],
)
def test_a_bad_plan_file_is_refused_with_its_field(
    run: Meter, tmp_path: Path, text: str, expected: str
) -> None:
    plan = write(tmp_path, "plan.yaml", text)
    assert_refused(run("quote", "--plan", plan, "--json"), f"error: {plan}: {expected}")
    # `plans apply` validates every file before it touches the database.
    assert_refused(run("plans", "apply", plan), f"error: {plan}: {expected}")


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--usage", "api_calls=-5"], "error: --usage api_calls: must not be negative, got '-5'"),
        (["--usage", "api_calls=1e400"], "error: --usage api_calls: must be less than 10^18"),
        (["--period-start", "2026-11-01T00:00:00Z"], "error: --period-end: required with"),
        (
            ["--period-start", "2026-11-01T00:00:00", "--period-end", "2026-12-01T00:00:00Z"],
            "error: --period-start: timestamp needs a UTC offset",
        ),
        (
            ["--period-start", "2026-12-01T00:00:00Z", "--period-end", "2026-11-01T00:00:00Z"],
            "error: --period-end: must be after --period-start",
        ),
    ],
)
def test_quote_checks_usage_and_period(run: Meter, args: list[str], expected: str) -> None:
    assert_refused(run("quote", "--plan", API_PLAN, *args), expected)


def test_quote_refuses_naive_and_deeply_nested_events(run: Meter, tmp_path: Path) -> None:
    naive = write(
        tmp_path, "naive.jsonl", '{"metric": "api_calls", "timestamp": "2026-11-27T00:00:00"}\n'
    )
    result = run("quote", "--plan", API_PLAN, "--events", naive)
    assert_refused(result, f"error: {naive}:1: timestamp: must include a UTC offset")
    deep = write(tmp_path, "deep.jsonl", '{"metric": "api_calls", "properties": '
                 + "[" * 5000 + "]" * 5000 + "}\n")  # fmt: skip
    assert_refused(
        run("quote", "--plan", API_PLAN, "--events", deep), f"error: {deep}:1: nested too"
    )
