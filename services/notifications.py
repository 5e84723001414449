"""Webhook delivery of the outbox: the rules (what is sent, how it is signed, when a failed
delivery is tried again). The `deliver_notifications` actor (`tasks.notify`) only runs
`deliver_configured`.

Each run claims the due outbox rows and POSTs each one as JSON to `METER_WEBHOOK_URL`. A 2xx
answer marks the row delivered; anything else (an error status, a refused connection, a
timeout) counts an attempt and schedules the next one after an exponential backoff, so a
receiver that is down is neither hammered nor forgotten. Delivery is at least once: a receiver
deduplicates on the `X-Meter-Delivery` header.

Signature (Stripe's scheme): `X-Meter-Signature: t=<unix time>,v1=<hex>` where `hex` is the
HMAC-SHA256 of `"<unix time>.<body>"` under `METER_WEBHOOK_SECRET`. Signing the time as well
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
from datetime import timedelta

from storage import outbox
from storage.settings import Settings

log = logging.getLogger(f"meterline.{__name__}")

SIGNATURE_HEADER = "X-Meter-Signature"
DELIVERY_HEADER = "X-Meter-Delivery"
TOPIC_HEADER = "X-Meter-Topic"


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


def _post(url: str, secret: str, message: outbox.OutboxMessage, timeout: float) -> None:
    """One POST; raises on anything but a 2xx answer."""
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"METER_WEBHOOK_URL: {url!r} is not an http(s) URL")
    body = json.dumps(
        {
            "id": message.id,
            "topic": message.topic,
            "created_at": message.created_at.isoformat(),
            "payload": message.payload,
        },
        separators=(",", ":"),
    ).encode()
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "User-Agent": "meterline-webhook/1",
            SIGNATURE_HEADER: sign(secret, body, int(time.time())),
            DELIVERY_HEADER: str(message.id),
            TOPIC_HEADER: message.topic,
        },
    )
    with _opener.open(request, timeout=timeout) as response:
        response.read()  # any status but 2xx has raised HTTPError already


def deliver_due(
    url: str,
    secret: str,
    *,
    batch: int = 20,
    budget: float = 60.0,
    timeout: float = 10.0,
    backoff: Backoff | None = None,
) -> DeliveryReport:
    """Deliver the due notifications, `batch` claimed at a time, claiming no new batch once
    `budget` seconds have passed (a run stays short; the next run goes on). Returns what was
    delivered and what failed."""
    backoff = backoff or Backoff()
    # The lease covers a whole batch of sequential attempts that all time out, with margin.
    lease = timedelta(seconds=timeout * batch + 30)
    deadline = time.monotonic() + budget
    delivered = failed = 0
    while time.monotonic() < deadline:
        messages = outbox.due(batch, lease=lease)
        if not messages:
            break
        for message in messages:
            try:
                _post(url, secret, message, timeout)
            except Exception as exc:  # any failure of one notification is that row's to retry
                failed += 1
                retry_in = backoff.after(message.attempts + 1)
                outbox.mark_failed(message.id, _describe(exc), retry_in)
                log.warning(
                    "notification %s (%s) failed, attempt %s, next in %ss: %s",
                    message.id,
                    message.topic,
                    message.attempts + 1,
                    int(retry_in.total_seconds()),
                    _describe(exc),
                )
            else:
                delivered += 1
                outbox.mark_delivered(message.id)
    return DeliveryReport(delivered=delivered, failed=failed)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return f"{type(exc.reason).__name__}: {exc.reason}"
    return f"{type(exc).__name__}: {exc}"


def deliver_configured(settings: Settings) -> DeliveryReport | None:
    """Deliver what is due to the configured webhook. Without `METER_WEBHOOK_URL` nothing is
    sent and the notifications wait (None); a URL without `METER_WEBHOOK_SECRET` is an error,
    since an unsigned webhook cannot be trusted by its receiver."""
    if not settings.METER_WEBHOOK_URL:
        log.debug("METER_WEBHOOK_URL is not set: %s notification(s) wait", outbox.pending_count())
        return None
    if settings.METER_WEBHOOK_SECRET is None:
        raise RuntimeError("METER_WEBHOOK_SECRET: required to sign webhooks (METER_WEBHOOK_URL)")
    report = deliver_due(
        settings.METER_WEBHOOK_URL, settings.METER_WEBHOOK_SECRET.get_secret_value()
    )
    if report.delivered or report.failed:
        log.info("notifications: %s delivered, %s failed", report.delivered, report.failed)
    return report
