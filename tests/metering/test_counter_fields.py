"""The counter hash layout: scaled integers where exact, JSON where not, and the switch."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from pricing.aggregations import MetricState
from storage.usage import counter_fields
from tasks.ingest import ingest_events
from tests.metering.helpers import assert_consistent, batch, event, setup_customer

AT = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)


def state(total: str, maximum: str, latest: str) -> MetricState:
    return MetricState(
        count=3,
        total=Decimal(total),
        maximum=Decimal(maximum),
        latest_at=AT,
        latest_event_id="e9",
        latest_value=Decimal(latest),
    )


def test_exact_values_are_scaled_integers_and_round_trip() -> None:
    original = state("12.5", "-0.000001", "7")
    fields = counter_fields.metric_fields("m", original)
    assert fields["s:m"] == "12500000" and fields["x:m"] == "-1" and "j:m" not in fields
    assert counter_fields.metric_from_fields("m", fields) == original


def test_values_beyond_the_scale_or_the_range_are_kept_as_json() -> None:
    for original in (state("0.0000001", "1", "1"), state("1000000000", "1", "1")):
        fields = counter_fields.metric_fields("m", original)
        assert list(fields) == ["j:m"]
        assert counter_fields.metric_from_fields("m", fields) == original


def test_latest_keys_order_like_timestamp_then_event_id() -> None:
    keys = [
        counter_fields.latest_key(AT, "b"),
        counter_fields.latest_key(AT, "ab"),
        counter_fields.latest_key(AT + timedelta(microseconds=1), "a"),
    ]
    assert sorted(keys) == [keys[1], keys[0], keys[2]]


def test_a_metric_outgrowing_the_integer_range_switches_to_json(clean_state: None) -> None:
    from storage.redis_client import get_redis
    from storage.usage.counters import segment_key

    setup_customer()
    ingest_events(batch([event(quantity="1")]))  # integer fields, merged inside Redis
    prefix = segment_key("cus_1", AT).rsplit(":", 1)[0]
    key = next(k for k in get_redis().keys(prefix + ":*"))
    assert get_redis().hexists(key, "s:api_calls")
    ingest_events(batch([event(quantity="999999999.5") for _ in range(3)]))  # past 10^15 µunits
    assert get_redis().hexists(key, "j:api_calls") and not get_redis().hexists(key, "s:api_calls")
    assert assert_consistent()["api_calls"] == Decimal("2999999999.5")
    ingest_events(batch([event(quantity="1")]))  # now always merged by Python
    assert assert_consistent()["api_calls"] == Decimal("3000000000.5")
