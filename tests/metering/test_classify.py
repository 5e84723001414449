"""Classification: the batch-level short path decides exactly as the per-event pass does, and
leaves every batch it cannot judge whole to that pass."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services import classify
from tests.metering.helpers import event, setup_customer


@pytest.fixture(autouse=True)
def customers(clean_state: None) -> None:
    setup_customer("cus_1")
    setup_customer("cus_2")


def _outcome(found: classify.Classified) -> tuple[Any, ...]:
    return (
        [(e.customer_id, e.event_id, e.quantity, s.start) for e, s in found.accepted],
        sorted((r.reason, r.position) for r in found.rejections),
        found.duplicates,
        sorted((r.customer_id, r.name, r.keys, r.start) for r in found.routes.values()),
        found.named,
    )


def _both_ways(
    events: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    now = datetime.now(UTC)
    where: list[int] = []
    short = _outcome(classify.classify(events, now, where=where))
    monkeypatch.setattr(classify, "_all_plain", lambda *args: None)
    slow_where: list[int] = []
    slow = _outcome(classify.classify(events, now, where=slow_where))
    assert where == slow_where
    return short, slow


def _short_path_taken(events: list[dict[str, Any]]) -> bool:
    taken: list[bool] = []
    original = classify._all_plain

    def spy(*args: Any) -> Any:
        found = original(*args)
        taken.append(found is not None)
        return found

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(classify, "_all_plain", spy)
        classify.classify(events, datetime.now(UTC))
    return taken == [True]


def test_a_plain_batch_is_judged_at_once_as_event_by_event(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    events = [event("storage", quantity=q, customer_id=f"cus_{q % 2 + 1}") for q in range(1, 30)]
    events.append({"customer_id": "cus_3", "metric": "storage"})  # refused by the contract
    assert _short_path_taken(events)
    short, slow = _both_ways(events, monkeypatch)
    assert short == slow
    assert len(short[0]) == 29 and short[4] == {"cus_1", "cus_2", "cus_3"}


@pytest.mark.parametrize(
    "odd_one",
    [
        {"customer_id": "cus_unknown"},
        {"quantity": "-1"},
        {"event_id": "same"},
        {"metric": "api_calls"},  # read by a filtered metric: folded in Python
        {"metric": "no_such_metric"},
        {"timestamp": (datetime.now(UTC) - timedelta(days=400)).isoformat()},
    ],
)
def test_a_batch_the_short_path_cannot_judge_goes_event_by_event(
    odd_one: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    events = [event("storage", quantity=3, event_id="same")]
    events += [event("storage", quantity=q) for q in range(1, 10)]
    events[-1] |= odd_one
    if odd_one != {"event_id": "same"}:
        events[0]["event_id"] = "first"
    assert not _short_path_taken(events)
    short, slow = _both_ways(events, monkeypatch)
    assert short == slow
