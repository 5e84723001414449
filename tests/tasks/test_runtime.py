"""Start-up is explicit: actors declared at import wait on a placeholder, `runtime.start`
moves them onto the broker the entry point chose."""

from __future__ import annotations

import subprocess
import sys
import textwrap

_SCRIPT = textwrap.dedent(
    """
    import dramatiq
    from dramatiq.brokers.stub import StubBroker

    import tasks.billing, tasks.ingest, tasks.maintenance, tasks.notify
    from tasks import runtime
    from tasks.ingest import ingest_events

    placeholder = ingest_events.broker
    assert isinstance(placeholder, StubBroker), placeholder
    chosen = StubBroker()
    assert runtime.start(chosen) is chosen
    assert dramatiq.get_broker() is chosen
    for name in ("ingest_events", "generate_invoice", "reconcile_counters",
                 "deliver_notifications"):
        actor = chosen.get_actor(name)
        assert actor.broker is chosen, name
    ingest_events.send({"batch_id": "b", "events": []})
    assert chosen.queues["ingest"].qsize() == 1
    assert placeholder.queues.get("ingest") is None or placeholder.queues["ingest"].qsize() == 0
    print("ok")
    """
)


def test_actors_declared_at_import_move_to_the_started_broker() -> None:
    result = subprocess.run(
        [sys.executable, "-c", _SCRIPT], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
