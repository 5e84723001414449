"""Webhook endpoints: which URLs and secrets are acceptable, and a customer's own endpoint.

Every notification goes to the global endpoint (METER_WEBHOOK_URL); a customer that has its own
(`meter customers set-webhook`) gets its notifications there as well, signed with its own secret
when it has one, else with METER_WEBHOOK_SECRET. The rows are `storage.catalog.webhooks`.
"""

from __future__ import annotations

from datetime import datetime
from urllib.parse import urlsplit

from pricing.errors import UserError, echo
from storage.catalog import webhooks as rows
from storage.catalog.webhooks import CustomerWebhook

__all__ = ["CustomerWebhook", "check_url", "clear_webhook", "set_webhook"]

MAX_URL_LENGTH = 2048
MIN_SECRET_LENGTH = 16
MAX_SECRET_LENGTH = 512


def check_url(url: str, field: str = "url") -> str:
    """`url` if it is an absolute http(s) URL with a host, else a UserError naming `field`.

    No credentials in it (the URL is shown by ops commands and logs), no fragment (never sent),
    no spaces or control characters."""
    if not url or len(url) > MAX_URL_LENGTH:
        raise UserError(field, f"must be 1 to {MAX_URL_LENGTH} characters")
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in url):
        raise UserError(field, f"{echo(url)} contains spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UserError(field, f"{echo(url)} is not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https"):
        raise UserError(field, f"{echo(url)} is not an http:// or https:// URL")
    if not parts.hostname:
        raise UserError(field, f"{echo(url)} has no host")
    if parts.username is not None or parts.password is not None:
        raise UserError(field, "must not carry credentials (sign with --secret instead)")
    if parts.fragment:
        raise UserError(field, f"{echo(url)} has a #fragment, which is never sent")
    if port == 0:
        raise UserError(field, f"{echo(url)} has port 0")
    return url


def check_secret(secret: str, field: str = "secret") -> str:
    """A signing secret: printable ASCII without spaces, long enough to resist guessing."""
    if not MIN_SECRET_LENGTH <= len(secret) <= MAX_SECRET_LENGTH:
        raise UserError(
            field, f"must be {MIN_SECRET_LENGTH} to {MAX_SECRET_LENGTH} characters long"
        )
    if not all(33 <= ord(ch) <= 126 for ch in secret):
        raise UserError(field, "must be printable ASCII without spaces")
    return secret


def set_webhook(
    customer_id: str, url: str, secret: str | None = None, *, now: datetime | None = None
) -> CustomerWebhook:
    """Send `customer_id`'s notifications to `url` too (from the next one written on);
    `secret` signs them (None: METER_WEBHOOK_SECRET)."""
    check_url(url)
    if secret is not None:
        check_secret(secret)
    return rows.set_webhook(customer_id, url, secret, now=now)


def clear_webhook(customer_id: str) -> bool:
    """Stop sending to the customer's own endpoint; False when it had none. Its rows already
    written stay and fail (then die) unless it gets an endpoint again before they are sent."""
    return rows.clear_webhook(customer_id)
