"""Which billing periods a customer has, and which are due for an invoice.

A customer is billed in its own timezone, on calendar periods or on an anniversary day, on the
interval of the plan it is on. Closing a label ('YYYY-MM', or 'YYYY' for yearly plans) covers
every customer × period with that label that has ended; the hourly close covers every period
that has ended since the customer started and has no invoice job yet, so a scheduler that was
down at month end catches up on its next run.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from pricing.periods import Period, billing_period, next_period, period_for_label
from storage.catalog.cache import CustomerContext, catalog, load_contexts
from storage.errors import InvalidInput
from storage.invoices import jobs
from storage.invoices.jobs import JobKey


def billing_interval(context: CustomerContext, at: datetime) -> str:
    """The billing interval of the plan the customer is on at `at` (or first was on)."""
    span = context.span_at(max(at, context.starts_at)) or (
        context.spans[0] if context.spans else None
    )
    return catalog.plan(span.plan_code)[0].interval if span else "month"


def period_at(context: CustomerContext, at: datetime) -> Period:
    """The customer's billing period around `at`."""
    return billing_period(
        at,
        timezone=context.timezone,
        anchor_day=context.anchor_day,
        interval=billing_interval(context, at),
    )


def period_of(context: CustomerContext, period_start: datetime) -> Period:
    """The customer's billing period that starts at `period_start`; InvalidInput otherwise."""
    period = period_at(context, period_start)
    if period.start != period_start:
        raise InvalidInput(
            f"period_start: {period_start.isoformat()} is not the start of a billing period of"
            f" customer {context.customer_id!r} (the period around it starts"
            f" {period.start.isoformat()})"
        )
    return period


@dataclass(frozen=True)
class NotEnded:
    """A customer × labelled period that has not ended yet, and where its customer lives."""

    key: JobKey
    timezone: str
    anchor_day: int | None

    def describe(self) -> str:
        """'2027-01-01T00:00:00+14:00 for Pacific/Kiritimati customers', in their local time."""
        local = self.key.period_end.astimezone(ZoneInfo(self.timezone))
        anchor = f" with anchor day {self.anchor_day}" if self.anchor_day else ""
        return f"{local.isoformat()} for {self.timezone} customers{anchor}"


@dataclass(frozen=True)
class LabelSelection:
    """What closing a label covers at `now`: the periods that have ended (one job each) and
    those that have not (their customers' local month, or anchor period, is still running)."""

    label: str | None
    ended: list[JobKey]
    not_ended: list[NotEnded]

    def earliest_and_latest(self) -> tuple[NotEnded, NotEnded] | None:
        if not self.not_ended:
            return None
        by_end = sorted(self.not_ended, key=lambda item: item.key.period_end)
        return by_end[0], by_end[-1]


class PeriodNotEnded(InvalidInput):
    """A close named a period that has not ended for any of its customers."""


def select_for_label(label: str | None, now: datetime | None = None) -> LabelSelection:
    """Every customer × period with this label ('YYYY-MM', or 'YYYY' for yearly plans) that the
    customer was subscribed in, split by whether it has ended at `now`; label None: each
    customer's last ended period. A label whose periods have ended for none of its customers
    yet is refused (PeriodNotEnded), saying when it ends: closing it would do nothing."""
    now = now or datetime.now(UTC)
    if label is not None:
        _check_label(label)
    ended: list[JobKey] = []
    not_ended: list[NotEnded] = []
    for context in load_contexts().values():
        period = _labelled_period(context, label, now)
        if period is None or not catalog.segments(context, period):
            continue
        key = JobKey.of(context.customer_id, period)
        if period.end <= now:
            ended.append(key)
        else:
            not_ended.append(NotEnded(key, context.timezone, context.anchor_day))
    selection = LabelSelection(label, ended, not_ended)
    bounds = selection.earliest_and_latest()
    if not ended and bounds is not None:
        earliest, latest = bounds
        when = f"it ends {earliest.describe()}"
        if latest.key.period_end != earliest.key.period_end:
            when = f"it ends {earliest.describe()} at the earliest, {latest.describe()} last"
        raise PeriodNotEnded(f"period: {label} has not ended yet ({when})")
    return selection


def keys_for_label(label: str | None, now: datetime | None = None) -> list[JobKey]:
    """The customer × periods with this label that have ended at `now` (see
    `select_for_label`, which also refuses a label that has ended for no customer yet)."""
    return select_for_label(label, now).ended


def due_keys(now: datetime | None = None) -> list[JobKey]:
    """Every customer × period that has ended since the customer started and has no job yet."""
    now = now or datetime.now(UTC)
    existing = jobs.existing_keys()
    keys = []
    for context in load_contexts().values():
        period = period_at(context, context.starts_at)
        while period.end <= now and (context.ends_at is None or period.start < context.ends_at):
            if (context.customer_id, period.start) not in existing and catalog.segments(
                context, period
            ):
                keys.append(JobKey.of(context.customer_id, period))
            period = next_period(period, interval=billing_interval(context, period.end))
    return keys


def _check_label(label: str) -> None:
    try:
        period_for_label(label, interval="month" if "-" in label else "year")
    except ValueError as exc:
        raise InvalidInput(f"period: {exc}") from None


def _labelled_period(context: CustomerContext, label: str | None, now: datetime) -> Period | None:
    if label is None:
        current = period_at(context, now)
        return period_at(context, current.start - timedelta(microseconds=1))
    try:
        return period_for_label(
            label,
            timezone=context.timezone,
            anchor_day=context.anchor_day,
            interval=billing_interval(context, now),
        )
    except ValueError:  # a yearly customer and a monthly label, or the other way round
        return None
