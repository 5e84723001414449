"""Plans: the pydantic models of a plan file, loading it, and its canonical form.

A pricing change is a plan file change, so a plan is checked completely when it is loaded:
any problem refuses the whole plan with a `PlanError` that names every bad field by its path
in the file (`charges[0].tiers[1].up_to`), never a half-valid plan.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pricing.charges import CHARGE_MODELS, PERCENTAGE_MODELS, Charge, GraduatedCharge
from pricing.charges.base import UnitChargeFields
from pricing.errors import PlanError, echo, join_path
from pricing.fields import Fraction, NonNegativeDecimal, PositiveDecimal, Share, ValueText
from pricing.limits import MetricLimits
from pricing.money import CURRENCIES, format_decimal
from pricing.plan_text import parse_plan_text

__all__ = [
    "MetricDefinition",
    "Plan",
    "PlanError",
    "included_usage",
    "load_plan",
    "plan_content_hash",
    "plan_to_dict",
]

Aggregation = Literal["sum", "count", "max", "unique_count", "latest", "weighted_sum"]

_SLUG = re.compile(r"[a-z0-9][a-z0-9_-]*")
MAX_CODE_LENGTH = 64
MAX_NAME_LENGTH = 200


class MetricDefinition(BaseModel):
    """How the events of a metric aggregate over a period.

    `event` is the event name read (default: the metric's own key), so one event stream can
    feed several metrics, e.g. `eu_calls: {aggregation: sum, event: api_calls, filter: {region:
    [eu]}}`. Filter values are kept as text (see `pricing.fields.value_text`).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    aggregation: Aggregation
    field: str | None = Field(default=None, min_length=1)
    filter: dict[str, list[ValueText]] | None = None
    event: str | None = Field(default=None, min_length=1, max_length=128)
    # Alert thresholds as shares of the metric's included usage; None: the plan's `alerts`.
    alerts: tuple[Share, ...] | None = None

    @field_validator("alerts")
    @classmethod
    def _alerts_ascending(cls, values: tuple[Decimal, ...] | None) -> tuple[Decimal, ...] | None:
        return ascending_thresholds(values)

    @model_validator(mode="after")
    def _field_fits_aggregation(self) -> Self:
        errors: list[tuple[str, str]] = []
        if self.aggregation == "unique_count" and self.field is None:
            errors.append(("field", "required for unique_count (the property to count)"))
        if self.aggregation == "count" and self.field is not None:
            errors.append(("field", "count counts events and reads no field"))
        for key, values in (self.filter or {}).items():
            if not values:
                errors.append((f"filter.{key}", "must list at least one value"))
        if errors:
            raise PlanError(errors)
        return self


class Plan(BaseModel):
    """A plan file: what a customer pays per period for which usage."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    code: str
    name: str = Field(min_length=1, max_length=MAX_NAME_LENGTH)
    currency: str
    interval: Literal["month", "year"] = "month"
    base_fee: NonNegativeDecimal = Decimal(0)
    minimum_spend: NonNegativeDecimal | None = None
    tax_rate: Fraction = Decimal(0)
    metrics: dict[str, MetricDefinition] = Field(default_factory=dict)
    charges: list[Charge] = Field(default_factory=list)
    description: str | None = None
    # Days from an invoice's issue date to its due date under this plan; unset: the seller's
    # default (METER_PAYMENT_TERMS_DAYS). A customer's own terms take precedence.
    payment_terms_days: int | None = Field(default=None, ge=0, le=3650)
    # Alert thresholds (see pricing.alerts): shares of each metric's included usage (None: the
    # default 80/95/100 %; empty: off) and amounts of the period's estimated bill.
    alerts: tuple[Share, ...] | None = None
    spend_alerts: tuple[PositiveDecimal, ...] | None = None
    limits: dict[str, MetricLimits] = Field(default_factory=dict)  # per metric (pricing.limits)
    spend_cap: NonNegativeDecimal | None = None  # estimated bill per period

    @field_validator("alerts", "spend_alerts")
    @classmethod
    def _alerts_ascending(cls, values: tuple[Decimal, ...] | None) -> tuple[Decimal, ...] | None:
        return ascending_thresholds(values)

    @field_validator("code")
    @classmethod
    def _code_is_slug(cls, code: str) -> str:
        if len(code) > MAX_CODE_LENGTH:
            raise ValueError(f"at most {MAX_CODE_LENGTH} characters, got {len(code)}")
        if not _SLUG.fullmatch(code):
            raise ValueError(
                "must be lowercase letters, digits, '_' or '-', starting with a letter or digit"
            )
        return code

    @field_validator("currency", mode="before")
    @classmethod
    def _currency_is_iso(cls, currency: object) -> str:
        code = currency.strip().upper() if isinstance(currency, str) else currency
        if not isinstance(code, str) or code not in CURRENCIES:
            raise ValueError(f"not an ISO 4217 currency code: {echo(currency)}")
        return code

    @field_validator("metrics")
    @classmethod
    def _metric_names(cls, metrics: dict[str, MetricDefinition]) -> dict[str, MetricDefinition]:
        bad = [name for name in metrics if not 1 <= len(name) <= 128]
        if bad:
            raise PlanError([(name, "a metric name has 1 to 128 characters") for name in bad])
        return metrics

    @model_validator(mode="after")
    def _charges_fit_metrics(self) -> Self:
        errors: list[tuple[str, str]] = []
        seen: dict[str, int] = {}
        for index, charge in enumerate(self.charges):
            if charge.metric not in self.metrics:
                reason = f"metric {echo(charge.metric)} has no definition in metrics"
                errors.append((f"charges[{index}].metric", reason))
            key = _charge_identity(charge)
            if key in seen:
                errors.append((f"charges[{index}]", f"duplicates charges[{seen[key]}]"))
            seen.setdefault(key, index)
        if errors:
            raise PlanError(errors)
        return self

    @model_validator(mode="after")
    def _limits_fit_metrics(self) -> Self:
        errors: list[tuple[str, str]] = []
        for name, limits in self.limits.items():
            if name not in self.metrics:
                reason = f"metric {echo(name)} has no definition in metrics"
                errors.append((f"limits.{name}", reason))
            elif limits.throttle_at is not None and not included_usage(self, name):
                reason = "a share of the included usage, but this metric includes none"
                errors.append((f"limits.{name}.throttle_at", reason))
        if errors:
            raise PlanError(errors)
        return self


def ascending_thresholds(values: tuple[Decimal, ...] | None) -> tuple[Decimal, ...] | None:
    """Alert thresholds in ascending order; a threshold listed twice is refused."""
    if values is None:
        return None
    seen: set[Decimal] = set()
    for value in values:
        if value in seen:
            raise ValueError(f"{format_decimal(value)} is listed twice")
        seen.add(value)
    return tuple(sorted(values))


def load_plan(source: str | Mapping[str, Any]) -> Plan:
    """A plan from a mapping or from YAML/JSON text; any problem raises `PlanError`."""
    data = parse_plan_text(source) if isinstance(source, str) else source
    if not isinstance(data, Mapping):
        raise PlanError([("", "a plan must be a mapping of keys to values")])
    try:
        return Plan.model_validate(dict(data))
    except ValidationError as error:
        raise PlanError(_plan_errors(error)) from None


def plan_to_dict(plan: Plan) -> dict[str, Any]:
    """The canonical plain form of a plan: decimals as canonical strings ("0.1", never
    "0.10"), fields left at their default omitted, so that equal plans give equal dicts and
    `load_plan(yaml.safe_dump(plan_to_dict(p))) == p`."""
    canonical = _canonical(plan)
    assert isinstance(canonical, dict)  # noqa: S101 (invariant for mypy, not validation)
    return canonical


def plan_content_hash(plan: Plan) -> str:
    """sha256 of the canonical JSON: changes exactly when the plan's meaning changes."""
    text = json.dumps(plan_to_dict(plan), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def included_usage(plan: Plan, metric: str) -> Decimal:
    """Free usage of `metric` under `plan`, as shown to customers and used by alerts.

    The sum of `included` over the metric's charges plus, for a graduated charge, the units of
    its leading tiers priced at zero with no flat amount (an unbounded free tier is not
    counted: it would make everything included; nor is a free last tier, which is unbounded
    whatever its `up_to`).
    """
    total = Decimal(0)
    for charge in plan.charges:
        if charge.metric != metric:
            continue
        if isinstance(charge, UnitChargeFields):
            total += charge.included
        if isinstance(charge, GraduatedCharge):
            total += _free_leading_units(charge)
    return total


def _free_leading_units(charge: GraduatedCharge) -> Decimal:
    """Where the graduated charge's leading run of free tiers ends (0 if it has none)."""
    end = Decimal(0)
    last = len(charge.tiers) - 1
    for index, tier in enumerate(charge.tiers):
        if tier.up_to is None or index == last or tier.unit_amount or tier.flat_amount:
            break
        end = tier.up_to
    return end


def _canonical(value: object) -> object:
    if isinstance(value, BaseModel):
        fields = type(value).model_fields
        result: dict[str, object] = {}
        for name, info in fields.items():
            item = getattr(value, name)
            keep = name == "model" or info.is_required()
            if keep or item != info.get_default(call_default_factory=True):
                result[name] = _canonical(item)
        return result
    if isinstance(value, Decimal):
        return format_decimal(value)
    if isinstance(value, list | tuple):
        return [_canonical(item) for item in value]
    if isinstance(value, dict):
        return {key: _canonical(item) for key, item in value.items()}
    return value


def _charge_identity(charge: BaseModel) -> str:
    """What makes two charges the same price, whatever they are called."""
    canonical = _canonical(charge)
    assert isinstance(canonical, dict)  # noqa: S101 (invariant for mypy, not validation)
    return json.dumps({k: v for k, v in canonical.items() if k != "name"}, sort_keys=True)


def _plan_errors(error: ValidationError) -> list[tuple[str, str]]:
    """pydantic's errors as (path in the plan file, reason)."""
    known = ", ".join(sorted(CHARGE_MODELS))
    found: list[tuple[str, str]] = []
    for item in error.errors():
        loc = item["loc"]
        path = _path(loc)
        context = item.get("ctx") or {}
        cause = context.get("error")
        if isinstance(cause, PlanError):
            found.extend((join_path(path, sub), reason) for sub, reason in cause.errors)
        elif item["type"] == "union_tag_invalid":
            reason = f"unknown charge model {echo(context.get('tag'))}; known models: {known}"
            found.append((join_path(path, "model"), reason))
        elif item["type"] == "union_tag_not_found":
            found.append((join_path(path, "model"), f"required; known models: {known}"))
        elif item["type"] == "missing":
            found.append((path, "required"))
        elif item["type"] == "extra_forbidden":
            found.append((path, _unknown_key(loc)))
        else:
            found.append((path, item["msg"].removeprefix("Value error, ")))
    return found


def _unknown_key(loc: tuple[int | str, ...]) -> str:
    if loc and loc[-1] == "included" and any(part in PERCENTAGE_MODELS for part in loc):
        return "not allowed on percentage charges: they price amounts, not units"
    return "unknown key"


def _path(loc: tuple[int | str, ...]) -> str:
    """('charges', 0, 'graduated', 'tiers', 1, 'up_to') -> 'charges[0].tiers[1].up_to'.

    The discriminated union puts the charge model's name in the location; the file has no
    such level, so it is left out.
    """
    path = ""
    for index, part in enumerate(loc):
        if isinstance(part, int):
            path += f"[{part}]"
        elif index >= 2 and loc[index - 2] == "charges" and part in CHARGE_MODELS:
            continue
        else:
            path = join_path(path, part)
    return path
