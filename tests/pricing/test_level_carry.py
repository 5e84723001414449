"""Levels carried from one segment of a period to the next (`carried_levels`, `carry_over`):
pure, on states built from events, against the whole period aggregated at once."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pricing.aggregations import MetricState, aggregate
from pricing.events import Event
from pricing.metering import Segment, SegmentState, carried_levels, segment_usage
from pricing.periods import Period
from pricing.plans import Plan, load_plan

D = Decimal
START = datetime(2026, 11, 1, tzinfo=UTC)
NOVEMBER = Period(START, datetime(2026, 12, 1, tzinfo=UTC))  # 30 days
DAY = timedelta(days=1)
HOUR = timedelta(hours=1)


def plan(code: str, **metrics: str) -> Plan:
    lines = "\n".join(f"  {name}: {{aggregation: {agg}}}" for name, agg in metrics.items())
    return load_plan(f"code: {code}\nname: {code}\ncurrency: USD\nmetrics:\n{lines}\n")


LEVELS = plan("levels", gb="weighted_sum", disk="latest", peak="max", calls="sum")


def ev(metric: str, quantity: str, at: timedelta, event_id: str | None = None) -> Event:
    """An event `at` into November."""
    return Event(
        event_id=event_id or f"{metric}-{at}-{quantity}",
        customer_id="c",
        metric=metric,
        quantity=D(quantity),
        timestamp=START + at,
    )


def chain(
    plans: list[Plan], cuts: list[timedelta], events: list[Event]
) -> list[tuple[Segment, SegmentState]]:
    """November cut at `cuts`, one plan per segment, each with its own events' state."""
    bounds = [NOVEMBER.start, *(START + cut for cut in cuts), NOVEMBER.end]
    found = []
    for segment_plan, start, end in zip(plans, bounds[:-1], bounds[1:], strict=True):
        segment = Segment(segment_plan, 1, NOVEMBER, start, end)
        inside = Period(start, end)
        state = SegmentState(
            {
                key: MetricState.of(key, metric, events, inside)
                for key, metric in segment_plan.metrics.items()
            }
        )
        found.append((segment, state))
    return found


def quantities(links: list[tuple[Segment, SegmentState]]) -> list[dict[str, Decimal]]:
    levels = carried_levels(links)
    result = []
    for (segment, state), carried in zip(links, levels, strict=True):
        usage, _ = segment_usage(segment.plan, state, {}, segment, carried)
        result.append({key: u.quantity for key, u in usage.items()})
    return result


def test_the_issue_example_10_gb_split_14_16_of_30_days() -> None:
    links = chain([LEVELS, LEVELS], [14 * DAY], [ev("gb", "10", 0 * DAY)])
    a, b = quantities(links)
    assert (a["gb"], b["gb"]) == (D(14) / 3, D(16) / 3)
    assert round(a["gb"], 2) + round(b["gb"], 2) == D("10.00")


def test_a_level_lowered_after_the_change_counts_from_the_carried_level() -> None:
    # 10 GB from day 0, 10 deleted on day 19 under the new plan: b holds 10 GB for 5 days.
    links = chain(
        [LEVELS, LEVELS], [14 * DAY], [ev("gb", "10", 0 * DAY), ev("gb", "-10", 19 * DAY)]
    )
    _, b = quantities(links)
    assert b["gb"] == D(10) * 5 / 30


def test_latest_and_max_carry_the_last_reading_not_the_earlier_peak() -> None:
    readings = [
        ev("disk", "12", 2 * DAY),
        ev("disk", "7", 9 * DAY),
        ev("peak", "12", 2 * DAY),
        ev("peak", "7", 9 * DAY),
    ]
    a, b = quantities(chain([LEVELS, LEVELS], [14 * DAY], readings))
    assert (a["disk"], a["peak"]) == (7, 12)
    assert (b["disk"], b["peak"]) == (7, 7)
    # A reading under b: latest is b's own; the peak of the level is the higher of the two.
    more = [
        *readings,
        ev("disk", "5", 20 * DAY),
        ev("peak", "5", 20 * DAY),
        ev("peak", "6", 25 * DAY),
    ]
    _, b = quantities(chain([LEVELS, LEVELS], [14 * DAY], more))
    assert (b["disk"], b["peak"]) == (5, 7)


def test_flows_never_carry() -> None:
    _, b = quantities(chain([LEVELS, LEVELS], [14 * DAY], [ev("calls", "5", 1 * DAY)]))
    assert b["calls"] == 0


def test_a_level_carries_through_a_segment_without_events() -> None:
    events = [ev("gb", "3", 0 * DAY), ev("disk", "4", 1 * DAY), ev("peak", "4", 1 * DAY)]
    *_, c = quantities(chain([LEVELS, LEVELS, LEVELS], [10 * DAY, 20 * DAY], events))
    assert (c["gb"], c["disk"], c["peak"]) == (D(1), 4, 4)  # 3 GB × 10/30


def test_a_plan_without_the_metric_or_with_another_aggregation_breaks_the_chain() -> None:
    without = plan("without", calls="sum")
    other = plan("other", gb="sum", disk="max", peak="max")
    events = [ev("gb", "3", 0 * DAY), ev("disk", "4", 1 * DAY), ev("peak", "4", 1 * DAY)]
    *_, c = quantities(chain([LEVELS, without, LEVELS], [10 * DAY, 20 * DAY], events))
    assert (c["gb"], c["disk"], c["peak"]) == (0, 0, 0)
    _, b, c = quantities(chain([LEVELS, other, LEVELS], [10 * DAY, 20 * DAY], events))
    assert (b["gb"], b["disk"], b["peak"]) == (0, 0, 4)  # only `peak` is a max in both
    assert (c["gb"], c["disk"], c["peak"]) == (0, 0, 4)


def test_segments_of_different_periods_do_not_chain() -> None:
    (a, state), _ = chain([LEVELS, LEVELS], [14 * DAY], [])
    december = Period(NOVEMBER.end, datetime(2027, 1, 1, tzinfo=UTC))
    later = Segment(LEVELS, 1, december, december.start, december.end)
    with pytest.raises(ValueError, match="different billing periods"):
        carried_levels([(a, state), (later, SegmentState())])


@given(
    st.lists(st.tuples(st.integers(-5, 20), st.integers(0, 29 * 24)), max_size=12),
    st.lists(st.integers(1, 29 * 24), min_size=1, max_size=3, unique=True),
)
def test_cutting_a_period_changes_no_level(
    deltas: list[tuple[int, int]], cut_hours: list[int]
) -> None:
    """Cut anywhere, under the same plan: the weighted sums add up to the whole period's, the
    last segment's latest is the period's, and the highest peak is the period's."""
    events = [
        ev(metric, str(q if metric == "gb" else abs(q)), hour * HOUR, event_id=f"{metric}{i}")
        for i, (q, hour) in enumerate(deltas)
        for metric in ("gb", "disk", "peak")
    ]
    cuts = sorted(hour * HOUR for hour in cut_hours)
    parts = quantities(chain([LEVELS] * (len(cuts) + 1), cuts, events))
    whole = {key: aggregate(key, m, events, NOVEMBER) for key, m in LEVELS.metrics.items()}
    assert sum(p["gb"] for p in parts) == pytest.approx(whole["gb"], abs=D("1e-20"))
    assert parts[-1]["disk"] == whole["disk"]
    assert max(p["peak"] for p in parts) == whole["peak"]
