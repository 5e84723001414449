"""`honcho start` runs the Procfile's three processes together (web, worker, scheduler) on the
session's servers: the README's batch (two events for a customer, one for nobody) is answered
202 with a status per event, the worker ingests it and the usage read back over HTTP counts
it exactly, and the scheduler holds the leader lock."""

from __future__ import annotations

import sys
from pathlib import Path

import httpx
import pytest

from services import api_keys
from storage import db
from tests.api.test_http_process import _env, _up, free_port, started, wait_for
from tests.conftest import SessionServers
from tests.metering.helpers import setup_customer

BIN = Path(sys.executable).parent


def _used(base: str, key: str) -> str | None:
    answer = httpx.get(
        f"{base}/v1/customers/cus_42/usage", headers={"Authorization": f"Bearer {key}"}, timeout=10
    )
    return str(answer.json()["metrics"]["api_calls"]["used"]) if answer.status_code == 200 else None


def _scheduler_leads() -> bool:
    with db.connection() as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_locks JOIN pg_stat_activity USING (pid)"
            " WHERE locktype = 'advisory' AND granted"
            " AND application_name = 'meterline-scheduler' AND datname = current_database()"
        ).fetchone()
    return row is not None and row[0] == 1


@pytest.mark.slow
def test_honcho_start_runs_web_worker_and_scheduler(
    clean_state: None, test_servers: SessionServers
) -> None:
    setup_customer("cus_42")
    _, key = api_keys.create("ops")
    port = free_port()
    env = _env(test_servers) | {"PORT": str(port), "PATH": f"{BIN}:{_env(test_servers)['PATH']}"}
    base = f"http://127.0.0.1:{port}"
    with started([str(BIN / "honcho"), "start"], env):
        wait_for(lambda: _up(base))
        batch = {"events": [
            {"event_id": "req-1", "customer_id": "cus_42", "metric": "api_calls"},
            {"event_id": "req-2", "customer_id": "cus_42", "metric": "api_calls", "quantity": "3"},
            {"event_id": "req-3", "customer_id": "nobody", "metric": "api_calls"},
        ]}  # fmt: skip
        answer = httpx.post(
            f"{base}/v1/events", json=batch, headers={"Authorization": f"Bearer {key}"}, timeout=30
        )
        assert answer.status_code == 202
        document = answer.json()
        assert (document["accepted"], document["rejected"]) == (2, 1)
        assert document["events"][2]["code"] == "unknown_customer"
        wait_for(lambda: _used(base, key) == "4")  # the worker ingested both, once each
        wait_for(_scheduler_leads)
