"""How a segment's state is laid out in its Redis hash.

Most metrics are kept as integer fields at a fixed scale of 10^-6 (the ledger's quantity scale),
cheap to write and to read back (the hash is a copy of the rollups: nothing merges them here):

    n:<metric>  count                  s:<metric>  total × 10^6
    x:<metric>  maximum × 10^6         t:<metric>  latest key: 17-digit epoch µs, NUL, event id
    l:<metric>  latest value × 10^6

A metric that does not fit (a weighted sum, a value with more than 6 decimals, a total beyond
10^15 × 10^-6) is kept whole as JSON in `j:<metric>`, and percentage charge states as JSON in
`c:<charge>`.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from pricing.aggregations import MetricState
from pricing.metering import SegmentState

SCALE = 6
LIMIT = 10**15  # |scaled total| below this: two of them always add within 64 bits
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def scaled(value: Decimal) -> int | None:
    """value × 10^6 as an int, or None when that is not exact."""
    shifted = value.scaleb(SCALE)
    integral = shifted.to_integral_value()
    return int(integral) if shifted == integral else None


def latest_key(at: datetime, event_id: str) -> str:
    """Orders like (timestamp, event_id): fixed-width microseconds, then the id."""
    micros = (at - _EPOCH) // timedelta(microseconds=1)
    return f"{micros:017d}\x00{event_id}"


def integer_fields(name: str, state: MetricState) -> dict[str, str] | None:
    """The scaled-integer fields of a metric, or None when it must be kept as JSON."""
    if state.weighted_v or state.weighted_vt:
        return None
    total = scaled(state.total)
    if total is None or abs(total) >= LIMIT:
        return None
    fields = {f"n:{name}": str(state.count), f"s:{name}": str(total)}
    if state.maximum is not None:
        maximum = scaled(state.maximum)
        if maximum is None:
            return None
        fields[f"x:{name}"] = str(maximum)
    if state.latest_at is not None and state.latest_event_id is not None:
        latest = scaled(state.latest_value) if state.latest_value is not None else None
        if latest is None:
            return None
        fields[f"t:{name}"] = latest_key(state.latest_at, state.latest_event_id)
        fields[f"l:{name}"] = str(latest)
    return fields


def metric_fields(name: str, state: MetricState) -> dict[str, str]:
    fields = integer_fields(name, state)
    if fields is None:
        return {f"j:{name}": json.dumps(SegmentState.metric_json(state))}
    return fields


def _from_scaled(raw: str) -> Decimal:
    return Decimal(int(raw)).scaleb(-SCALE)


def metric_from_fields(name: str, fields: dict[str, str]) -> MetricState:
    raw = fields.get(f"j:{name}")
    if raw is not None:
        return MetricState.from_dict(json.loads(raw))
    state = MetricState(count=int(fields.get(f"n:{name}", 0)))
    state.total = _from_scaled(fields.get(f"s:{name}", "0"))
    if f"x:{name}" in fields:
        state.maximum = _from_scaled(fields[f"x:{name}"])
    if f"t:{name}" in fields:
        micros, _, event_id = fields[f"t:{name}"].partition("\x00")
        state.latest_at = _EPOCH + timedelta(microseconds=int(micros))
        state.latest_event_id = event_id
        state.latest_value = _from_scaled(fields[f"l:{name}"])
    return state


def metric_names(fields: dict[str, str]) -> set[str]:
    return {f[2:] for f in fields if f[:2] in ("n:", "j:")}


def state_to_fields(state: SegmentState) -> dict[str, str]:
    fields: dict[str, str] = {}
    for name, metric in state.metrics.items():
        fields.update(metric_fields(name, metric))
    for key, (charge, charge_state) in state.charges.items():
        fields[f"c:{key}"] = json.dumps(SegmentState.charge_json(charge, charge_state))
    return fields


def state_from_fields(fields: dict[str, str]) -> SegmentState:
    state = SegmentState()
    for name in metric_names(fields):
        state.metrics[name] = metric_from_fields(name, fields)
    for field, raw in fields.items():
        if field.startswith("c:"):
            state.charges[field[2:]] = SegmentState.charge_from_json(json.loads(raw))
    return state
