"""Webhook delivery of the outbox: the rules (what is sent, how it is signed, when a failed
delivery is tried again, when it is given up). The `deliver_notifications` actor
(`tasks.notify`) only runs `deliver_configured`.

Each run claims the due outbox rows and POSTs each one as JSON to its endpoint: the global
`METER_WEBHOOK_URL`, or a customer's own (`services.webhooks`). A 2xx answer marks the row
delivered; anything else (an error status, a redirect, a refused connection, a timeout) counts
an attempt and schedules the next one after an exponential backoff, so a receiver that is down
is neither hammered nor forgotten. The `METER_WEBHOOK_MAX_ATTEMPTS`-th failure makes the row
dead: listed by `meter ops notifications --dead`, sent again by `meter ops redeliver`.
Delivery is at least once: a receiver deduplicates on the payload's `idempotency_key` (or the
`X-Meter-Delivery` header, the row id, which differs between endpoints).

Signature (Stripe's scheme): `X-Meter-Signature: t=<unix time>,v1=<hex>` where `hex` is the
HMAC-SHA256 of `"<unix time>.<body>"` under the endpoint's secret. Signing the time as well
lets a receiver refuse replays of an old request (`verify_signature`'s `tolerance`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pricing.errors import ConfigError
from services.webhooks import check_url
from storage import db, outbox
from storage.catalog import webhooks
from storage.invoices.records import Invoice
from storage.settings import Settings

log = logging.getLogger(f"meterline.{__name__}")

SIGNATURE_HEADER = "X-Meter-Signature"
DELIVERY_HEADER = "X-Meter-Delivery"
TOPIC_HEADER = "X-Meter-Topic"

#: The topics Meterline writes (alerts write the first three, finalization the last).
USAGE_THRESHOLD_REACHED = "usage.threshold_reached"
SPEND_THRESHOLD_REACHED = "spend.threshold_reached"
LIMIT_REACHED = "limit.reached"
INVOICE_FINALIZED = "invoice.finalized"

#: Attempts before a row is dead (METER_WEBHOOK_MAX_ATTEMPTS): with the default backoff, the
#: last one comes about 11 hours after the first.
DEFAULT_MAX_ATTEMPTS = 20


@dataclass(frozen=True)
class Backoff:
    """Delay before the next attempt: `base` doubled per failed attempt, at most `cap`."""

    base: timedelta = timedelta(seconds=10)
    cap: timedelta = timedelta(hours=1)

    def after(self, failed_attempts: int) -> timedelta:
        """The wait after the `failed_attempts`-th failure in a row (1 = the first)."""
        exponent = min(max(failed_attempts - 1, 0), 30)
        return min(self.base * (1 << exponent), self.cap)


@dataclass(frozen=True)
class DeliveryReport:
    delivered: int
    failed: int
    dead: int = 0  # of the failed, how many were given up

    def __add__(self, other: DeliveryReport) -> DeliveryReport:
        return DeliveryReport(
            self.delivered + other.delivered, self.failed + other.failed, self.dead + other.dead
        )


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The signature header value for `body` sent at `timestamp` (unix seconds)."""
    signed = f"{timestamp}.".encode() + body
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify_signature(
    secret: str, body: bytes, header: str, *, tolerance: float = 300, now: float | None = None
) -> bool:
    """What a receiver runs: is `header` a valid signature of `body`, made recently?"""
    try:
        parts = dict(item.split("=", 1) for item in header.split(","))
        timestamp = int(parts["t"])
        given = parts["v1"]
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance:
        return False
    expected = sign(secret, body, timestamp).split("v1=", 1)[1]
    return hmac.compare_digest(expected, given)


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirected POST would arrive as a GET without its body: count it as a failure (the
    error names the status) instead of as a delivery."""

    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


_opener = urllib.request.build_opener(_NoRedirects)


def _post(url: str, secret: str, message: outbox.OutboxMessage, timeout: float, at: int) -> None:
    """One POST, signed at `at` (unix seconds); raises on anything but a 2xx answer."""
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"webhook URL: {url!r} is not an http(s) URL")
    body = json.dumps(
        {
            "id": message.id,
            "topic": message.topic,
            "created_at": message.created_at.isoformat(),
            "payload": message.payload,
        },
        separators=(",", ":"),
    ).encode()
    request = urllib.request.Request(  # noqa: S310 (check_url allows http(s) only)
        url,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "User-Agent": "meterline-webhook/1",
            SIGNATURE_HEADER: sign(secret, body, at),
            DELIVERY_HEADER: str(message.id),
            TOPIC_HEADER: message.topic,
        },
    )
    with _opener.open(request, timeout=timeout) as response:
        response.read()  # any status but 2xx has raised HTTPError already


class _Undeliverable(Exception):
    """The row has nowhere to go (its customer's endpoint was cleared): dead at once."""


class _Endpoints:
    """Where each claimed row goes, and the key that signs it."""

    def __init__(self, url: str | None, secret: str | None) -> None:
        self.url = url
        self.secret = secret
        self.customers: dict[str, webhooks.CustomerWebhook] = {}

    def load(self, messages: list[outbox.OutboxMessage]) -> None:
        """Read the customer endpoints of a claimed batch (one query)."""
        wanted = [m.customer_id for m in messages if m.endpoint == outbox.CUSTOMER]
        self.customers = webhooks.get_webhooks(c for c in wanted if c is not None)

    def target(self, message: outbox.OutboxMessage) -> tuple[str, str]:
        """(URL, secret) for `message`; raises _Undeliverable or ConfigError."""
        if message.endpoint == outbox.CUSTOMER:
            hook = self.customers.get(message.customer_id or "")
            if hook is None:
                raise _Undeliverable(f"customer {message.customer_id!r} has no webhook endpoint")
            url: str | None = hook.url
            secret = hook.secret or self.secret
        else:
            url, secret = self.url, self.secret
        if url is None:
            raise ConfigError("METER_WEBHOOK_URL", "not set")
        if secret is None:
            raise ConfigError("METER_WEBHOOK_SECRET", "required to sign webhooks")
        return url, secret


def deliver_due(
    url: str | None,
    secret: str | None,
    *,
    batch: int = 20,
    budget: float = 60.0,
    timeout: float = 10.0,
    backoff: Backoff | None = None,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    now: datetime | None = None,
) -> DeliveryReport:
    """Deliver the due notifications, `batch` claimed at a time, claiming no new batch once
    `budget` seconds have passed (a run stays short; the next run goes on). Rows for the
    global endpoint wait while `url` is None; a customer's rows go to its own endpoint.

    A row whose `max_attempts`-th attempt fails is dead (`meter ops redeliver` revives it).
    `now` fixes the clock of the whole run (default: the time of each step). Returns what was
    delivered, what failed and how many of those died."""
    backoff = backoff or Backoff()
    # The lease covers a whole batch of sequential attempts that all time out, with margin.
    lease = timedelta(seconds=timeout * batch + 30)
    endpoints = _Endpoints(url, secret)
    kinds = (outbox.GLOBAL, outbox.CUSTOMER) if url else (outbox.CUSTOMER,)
    deadline = time.monotonic() + budget
    report = DeliveryReport(0, 0, 0)
    while time.monotonic() < deadline:
        messages = outbox.due(batch, lease=lease, now=now, endpoints=kinds)
        if not messages:
            break
        endpoints.load(messages)
        for message in messages:
            report += _attempt(message, endpoints, timeout, backoff, max_attempts, now)
    return report


def _attempt(
    message: outbox.OutboxMessage,
    endpoints: _Endpoints,
    timeout: float,
    backoff: Backoff,
    max_attempts: int,
    now: datetime | None,
) -> DeliveryReport:
    """One delivery attempt of one row, its outcome recorded; what it adds to the report."""
    at = now or datetime.now(UTC)
    try:
        target, key = endpoints.target(message)
        _post(target, key, message, timeout, int(at.timestamp()))
    except Exception as exc:  # any failure of one notification is that row's to retry
        attempt = message.attempts + 1
        dead = attempt >= max_attempts or isinstance(exc, _Undeliverable)
        retry_in = backoff.after(attempt)
        outbox.mark_failed(message.id, _describe(exc), retry_in, now, dead=dead)
        log.warning(
            "notification %s (%s to %s) failed, attempt %s, %s: %s",
            message.id,
            message.topic,
            message.endpoint,
            attempt,
            "dead" if dead else f"next in {int(retry_in.total_seconds())}s",
            _describe(exc),
        )
        return DeliveryReport(0, 1, int(dead))
    outbox.mark_delivered(message.id, now)
    return DeliveryReport(1, 0, 0)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return f"{type(exc.reason).__name__}: {exc.reason}"
    return f"{type(exc).__name__}: {exc}"


def deliver_configured(settings: Settings, *, now: datetime | None = None) -> DeliveryReport:
    """Deliver what is due to the configured endpoints. Without `METER_WEBHOOK_URL` the global
    rows wait (customers' own endpoints are still served); an invalid URL, or a URL without
    `METER_WEBHOOK_SECRET`, is a ConfigError, since an unsigned webhook cannot be trusted by
    its receiver."""
    url = settings.METER_WEBHOOK_URL
    secret = settings.METER_WEBHOOK_SECRET
    if url:
        check_url(url, "METER_WEBHOOK_URL")
        if secret is None:
            raise ConfigError(
                "METER_WEBHOOK_SECRET", "required to sign webhooks (METER_WEBHOOK_URL)"
            )
    else:
        log.debug("METER_WEBHOOK_URL is not set: global notifications wait")
    report = deliver_due(
        url or None,
        secret.get_secret_value() if secret else None,
        max_attempts=settings.METER_WEBHOOK_MAX_ATTEMPTS,
        timeout=settings.METER_WEBHOOK_TIMEOUT_SECONDS,
        now=now,
    )
    if report.delivered or report.failed:
        log.info(
            "notifications: %s delivered, %s failed (%s dead)",
            report.delivered,
            report.failed,
            report.dead,
        )
    return report


def invoice_finalized_payload(invoice: Invoice) -> dict[str, Any]:
    """The `invoice.finalized` notification of `invoice` (amounts as decimal strings)."""
    return {
        "invoice_id": invoice.id,
        "number": invoice.number,
        "customer_id": invoice.customer_id,
        "period": invoice.period_label,
        "period_start": invoice.period_start.isoformat(),
        "period_end": invoice.period_end.isoformat(),
        "currency": invoice.currency,
        "subtotal": format(invoice.subtotal, "f"),
        "tax": format(invoice.tax, "f"),
        "total": format(invoice.total, "f"),
        "finalized_at": invoice.finalized_at.isoformat() if invoice.finalized_at else None,
        "due_date": invoice.due_date.isoformat() if invoice.due_date else None,
        "idempotency_key": f"invoice.finalized:{invoice.id}",
    }


def notify_invoice_finalized(conn: db.Connection, invoice: Invoice) -> int:
    """Queue `invoice.finalized` on `conn`, in the finalizing transaction: it exists if and
    only if the finalization committed, and once (its idempotency key) however often it runs."""
    return outbox.enqueue(
        INVOICE_FINALIZED,
        invoice_finalized_payload(invoice),
        conn,
        now=invoice.finalized_at,
        customer_id=invoice.customer_id,
    )
