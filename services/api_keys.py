"""HTTP API keys: their scopes and who may do what with them.

`ops` keys read and operate everything; `ingest` keys send events (and check limits, which a
producer gates requests on); `customer:ID` keys read one customer's usage, limits, alerts and
invoices, and nothing of anyone else's.
"""

from __future__ import annotations

import hashlib
import threading
import time
from datetime import UTC, datetime

from pricing.errors import UserError, echo
from pricing.events import MAX_ID_LENGTH, text_problem
from storage import db
from storage.catalog import api_keys
from storage.catalog.api_keys import ApiKey
from storage.catalog.customers import get_customer

__all__ = [
    "ApiKey",
    "authenticate",
    "create",
    "id_problem",
    "key_cache",
    "list_keys",
    "may_check_limits",
    "may_ingest",
    "may_read",
    "retry_after",
    "revoke",
]

SCOPES = ("ops", "ingest", "customer:ID")


def parse_scope(text: str) -> tuple[str, str | None]:
    """`ops`, `ingest` or `customer:ID` → (scope, customer id)."""
    scope, sep, customer_id = text.partition(":")
    if scope in ("ops", "ingest") and not sep:
        return scope, None
    if scope == "customer" and customer_id:
        return scope, customer_id
    raise UserError("scope", f"expected one of {', '.join(SCOPES)}, got {echo(text)}")


def create(scope_text: str, name: str | None = None) -> tuple[ApiKey, str]:
    """A new key (and its text, shown once); a customer key's customer must exist."""
    scope, customer_id = parse_scope(scope_text)
    if customer_id is not None:
        get_customer(customer_id)  # NotFound names it
    return api_keys.create_key(scope, customer_id, name)


def list_keys() -> list[ApiKey]:
    return api_keys.list_keys()


def revoke(key_id: str, now: datetime | None = None) -> ApiKey:
    revoked = api_keys.revoke_key(key_id, now or datetime.now(UTC))
    key_cache.forget(revoked.id)  # at once in this process; elsewhere within the cache's TTL
    return revoked


class KeyCache:
    """Live keys this process has checked, trusted for `METER_API_KEY_CACHE_SECONDS` from the
    check (a monotonic clock): a request with a cached key costs a SHA-256 and a dictionary
    lookup instead of a PostgreSQL round trip. Only live keys are kept; a key revoked in
    another process is refused at most that many seconds later (in this one, at once).
    Entries are found by the SHA-256 of the whole key text, so the secrets are not kept."""

    def __init__(self, limit: int = 10_000) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._keys: dict[bytes, tuple[float, ApiKey]] = {}

    def clear(self) -> None:
        with self._lock:
            self._keys.clear()

    def forget(self, key_id: str) -> None:
        with self._lock:
            for digest in [d for d, (_, key) in self._keys.items() if key.id == key_id]:
                del self._keys[digest]

    def authenticate(self, text: str, ttl: float, now_s: float) -> ApiKey | None:
        digest = hashlib.sha256(text.encode(errors="surrogatepass")).digest()
        with self._lock:
            cached = self._keys.get(digest)
        if cached is not None and cached[0] > now_s:
            return cached[1]
        key = api_keys.authenticate(text)
        with self._lock:
            if key is None or ttl <= 0:
                self._keys.pop(digest, None)
            else:
                if len(self._keys) >= self.limit:
                    self._keys.clear()
                self._keys[digest] = (now_s + ttl, key)
        return key


key_cache = KeyCache()
db.register_cache(key_cache.clear)


def authenticate(key: str, now_s: float | None = None) -> ApiKey | None:
    """The live key `key` is, or None (unknown, wrong secret, revoked, malformed); `now_s` is
    a `time.monotonic()` reading (now)."""
    from storage.settings import get_settings

    ttl = get_settings().METER_API_KEY_CACHE_SECONDS
    return key_cache.authenticate(key, ttl, time.monotonic() if now_s is None else now_s)


def id_problem(value: str) -> str | None:
    """Why `value` cannot be an id (a customer, metric or invoice id), or None."""
    if not 0 < len(value) <= MAX_ID_LENGTH:
        return f"must be 1 to {MAX_ID_LENGTH} characters"
    return text_problem(value)


def may_read(key: ApiKey, customer_id: str) -> bool:
    """May `key` read this customer's usage, alerts and invoices?"""
    return key.scope == "ops" or (key.scope == "customer" and key.customer_id == customer_id)


def may_check_limits(key: ApiKey, customer_id: str) -> bool:
    """Limits are also what a producer (an ingest key) gates its requests on."""
    return key.scope == "ingest" or may_read(key, customer_id)


def may_ingest(key: ApiKey) -> bool:
    return key.scope in ("ops", "ingest")


def retry_after(key: ApiKey, now_s: float) -> int | None:
    """Count a request of `key`; over METER_API_RATE_LIMIT requests this minute, the seconds
    until it may ask again (None: go ahead)."""
    from storage import rate_limits
    from storage.settings import get_settings

    limit = get_settings().METER_API_RATE_LIMIT
    if not limit:
        return None
    count, left = rate_limits.count_request(key.id, now_s)
    return max(left, 1) if count > limit else None
