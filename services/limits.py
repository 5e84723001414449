"""`check_limit`: may this customer use `quantity` more of a metric now? From the live counters.

For gating in the request path: the customer and plan come from the in-process catalog, the
overrides from a cache whose revision is read with the counters, and the counters, that
revision and the recorder's batch markers in ONE pipelined Redis round trip; no SQL when the
caches are warm. Pricing runs only when a spend cap applies, and then prices amounts only
(`pricing.estimate`, no invoice documents), again only for the charges whose usage changed
since the customer's previous check (a memo per customer and plan version).

What is counted: the live counters plus what this process recorded and has not yet seen
ingested (`InFlight`, kept by the producer's recorder). A batch's events stop counting as
pending once the ingest worker has written its marker for the customer (set after the
counters hold them), so nothing is counted twice for long. The rules (boundary, throttle,
reasons) are `pricing.limits`'.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Collection
from datetime import UTC, datetime
from decimal import Decimal
from typing import Protocol

from pricing.aggregations import MetricState, metric_event_name
from pricing.charges import PercentageCharge, PercentageState
from pricing.charges.base import ChargeResult, MetricUsage
from pricing.errors import UserError, echo
from pricing.estimate import ChargeMemo, estimate_total
from pricing.events import checked_number
from pricing.limits import LimitDecision, Pending, decide
from pricing.metering import Segment, SegmentState, charge_key, segment_usage
from pricing.money import parse_decimal
from pricing.plans import MetricDefinition
from services.limit_snapshot import CounterSnapshot, LimitSnapshots
from services.overrides import current_segment, limits_for, override_cache
from services.usage import carried_in, segment_counters
from storage import db
from storage.catalog import limits as override_store
from storage.catalog.cache import catalog
from storage.errors import NotFound
from storage.usage import counters

#: What `check_limit` returned before limits existed; the same object now.
LimitCheck = LimitDecision


class InFlight(Protocol):
    """The producer's side (the recorder): what it holds, and being told what was ingested."""

    def pending(self, customer_id: str, event_name: str) -> Pending: ...

    def ingested(self, batch_ids: Collection[str]) -> None: ...


class _Memos:
    """Each customer's `ChargeMemo` for the plan version it is on: a spend-cap check prices
    again only the charges whose usage changed since the customer's previous check (usually
    just the requested metric's). Bounded: cleared when it holds `limit` customers."""

    def __init__(self, limit: int = 100_000) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._memos: dict[str, ChargeMemo] = {}

    def clear(self) -> None:
        with self._lock:
            self._memos.clear()

    def get(self, customer_id: str, segment: Segment) -> ChargeMemo:
        with self._lock:
            memo = self._memos.get(customer_id)
            if memo is None or not memo.fits(segment):
                if len(self._memos) >= self.limit:
                    self._memos.clear()
                memo = ChargeMemo(segment.plan.code, segment.plan_version)
                self._memos[customer_id] = memo
            return memo


_memos = _Memos()
db.register_cache(_memos.clear)


def charge_memo(customer_id: str, segment: Segment) -> ChargeMemo:
    """The customer's `ChargeMemo` for the segment's plan version, shared by `check_limit`'s
    spend cap and the alert check's estimated bill (`services.alert_estimate`)."""
    return _memos.get(customer_id, segment)


#: Aggregations to which pending events add (an upper bound with a filter or for uniques).
_ADDITIVE = frozenset({"sum", "count", "unique_count"})


def pending_units(definition: MetricDefinition, pending: Pending) -> Decimal:
    """How much the pending events may add to the metric: their quantities for a `sum` of
    the quantity, their number for `count` and `unique_count`; nothing for gauges, for
    `weighted_sum`, or for a `sum` of a property the recorder does not total."""
    if definition.aggregation == "sum" and definition.field is None:
        return pending.total
    if definition.aggregation in ("count", "unique_count"):
        return Decimal(pending.count)
    return Decimal(0)


def prospective_units(
    definition: MetricDefinition, used: Decimal, quantity: Decimal, segment: Segment, at: datetime
) -> Decimal:
    """The metric's usage once the request's `quantity` is recorded at `at`."""
    aggregation = definition.aggregation
    if aggregation in _ADDITIVE:
        return used + quantity
    if aggregation == "max":
        return max(used, quantity)
    if aggregation == "latest":
        return quantity
    # weighted_sum: a level of `quantity` added now and held to the end of the segment.
    weighting = segment.weighting_period
    held = Decimal((segment.end - at).total_seconds())
    return used + quantity * held / Decimal((weighting.end - weighting.start).total_seconds())


def check_quantity(quantity: object) -> Decimal:
    """The requested quantity within the event contract's bounds (finite, below 10^18, its
    decimal places), not negative; UserError on `quantity` otherwise."""
    try:
        number = checked_number(parse_decimal(quantity))
    except (ValueError, ArithmeticError) as error:
        reason = str(error)
        raise UserError(
            "quantity",
            reason if ", got" in reason or ": " in reason else f"{reason}, got {echo(quantity)}",
        ) from None
    if number < 0:
        raise UserError("quantity", f"must not be negative, got {echo(quantity)}")
    return number


def check_limit(
    customer_id: str,
    metric: str,
    quantity: int | Decimal | str = 1,
    *,
    at: datetime | None = None,
    in_flight: InFlight | None = None,
    snapshots: LimitSnapshots | None = None,
) -> LimitDecision:
    """May `customer_id` use `quantity` more of `metric` now? See `pricing.limits.decide` for
    the boundary. NotFound (a KeyError) for an unknown customer or a metric not in its plan.
    With `snapshots`, answered from the customer's background-refreshed snapshot when it has
    one (`services.limit_snapshot`), without a Redis round trip."""
    amount = check_quantity(quantity)
    at = at or datetime.now(UTC)
    segment = current_segment(customer_id, at)
    plan = segment.plan
    definition = plan.metrics.get(metric)
    if definition is None:
        raise NotFound(f"metric: {metric!r} is not a metric of plan {plan.code!r}")
    event_name = metric_event_name(metric, definition)
    pending = in_flight.pending(customer_id, event_name) if in_flight is not None else Pending()
    # The snapshot is read after the pending events (see services.limit_snapshot).
    snapshot = _snapshot(customer_id, segment, event_name, pending, in_flight, snapshots)
    state, uniques, revision, seen = (
        (snapshot.state, snapshot.uniques, snapshot.revision, snapshot.seen)
        if snapshot is not None
        else _read_live(customer_id, segment, pending)[1:]
    )
    seen = {batch_id for batch_id, _, _ in pending.batches if batch_id in seen}
    if in_flight is not None and seen:
        in_flight.ingested(seen)
    pending = pending.without(seen)
    limits = limits_for(plan, metric, override_cache.current(customer_id, revision))
    context = catalog.customers({customer_id})[customer_id]
    carried = carried_in(customer_id, context, segment)
    usage, results = segment_usage(plan, state, uniques, segment, carried)
    added = pending_units(definition, pending)
    used = usage[metric].quantity + added
    prospective = prospective_units(definition, used, amount, segment, at)
    estimated = None
    if limits.spend_cap is not None:
        extra = amount + (added if definition.aggregation == "sum" else Decimal(0))
        usage = {**usage, metric: MetricUsage(prospective)}
        results = _with_request(segment, state, uniques, carried, metric, extra, at, results)
        estimated = estimate_total(segment, usage, results, _memos.get(customer_id, segment))
    return decide(
        customer_id,
        limits,
        used=used,
        prospective=prospective,
        resets_at=segment.period.end,
        quantity=amount,
        pending=added,
        estimated_total=estimated,
        currency=plan.currency,
    )


def _unique_metrics(segment: Segment) -> list[str]:
    return [k for k, m in segment.plan.metrics.items() if m.aggregation == "unique_count"]


def _snapshot(
    customer_id: str,
    segment: Segment,
    event_name: str,
    pending: Pending,
    in_flight: InFlight | None,
    snapshots: LimitSnapshots | None,
) -> CounterSnapshot | None:
    """The customer's snapshot; on a miss, one synchronous read that becomes its snapshot."""
    if snapshots is None:
        return None
    unique_metrics = _unique_metrics(segment)
    found = snapshots.get(customer_id, segment.start, unique_metrics, event_name, in_flight)
    if found is not None:
        return found
    read_at = time.monotonic()
    version, state, uniques, revision, seen = _read_live(customer_id, segment, pending)
    found = CounterSnapshot(
        segment.start,
        tuple(unique_metrics),
        version,
        state,
        uniques,
        revision,
        frozenset(seen),
        read_at,
    )
    snapshots.put(customer_id, found, event_name, in_flight)
    return found


def _read_live(
    customer_id: str, segment: Segment, pending: Pending
) -> tuple[int, SegmentState, dict[str, int], str, set[str]]:
    """The segment's counters, the overrides revision and which pending batches the ingest
    has marked, in one round trip (markers first: a marker seen means its counters are)."""
    unique_metrics = _unique_metrics(segment)
    batch_ids = [batch_id for batch_id, _, _ in pending.batches]
    keys = [override_store.revision_key(customer_id)]
    keys += [counters.batch_marker_key(customer_id, batch_id) for batch_id in batch_ids]
    live, values = counters.read_segment_and(customer_id, segment.start, unique_metrics, keys)
    revision = override_store.decode_revision(values[0])
    seen = {batch_id for batch_id, value in zip(batch_ids, values[1:], strict=True) if value}
    if live is None:  # missing or gapped: rebuilt from the rollups (slow path, rare)
        version, state, uniques = segment_counters(customer_id, segment)
        return version, state, uniques, revision, seen
    return live.version, live.state, live.unique_counts, revision, seen


def _with_request(
    segment: Segment,
    state: SegmentState,
    uniques: dict[str, int],
    carried: dict[str, MetricState],
    metric: str,
    amount: Decimal,
    at: datetime,
    results: dict[int, ChargeResult],
) -> dict[int, ChargeResult]:
    """The percentage charges of `metric` priced with the request as one more event."""
    delta = SegmentState()
    for index, charge in enumerate(segment.plan.charges):
        if isinstance(charge, PercentageCharge) and charge.metric == metric:
            added = PercentageState()
            added.add(charge, at, "check_limit", amount)
            delta.charges[charge_key(metric, index)] = (charge, added)
    if not delta.charges:
        return results
    return segment_usage(segment.plan, state.merge(delta), uniques, segment, carried)[1]
