"""Runtime settings, read once from the environment.

Every process (CLI, worker, scheduler, tests) reads its configuration here so that a URL or a
limit has exactly one name. Unset URLs mean "use the embedded servers" (see `storage.embedded`).
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from storage.leader_lock import DEFAULT_LEASE_SECONDS


class Settings(BaseSettings):
    """Meterline's configuration; field names are the environment variable names."""

    model_config = SettingsConfigDict(case_sensitive=True, env_ignore_empty=True, extra="ignore")

    DATABASE_URL: str | None = None
    REDIS_URL: str | None = None
    BROKER_URL: str | None = None  # None: the Redis URL in effect (see embedded.broker_url)
    # REDIS_URL names one node of a Redis Cluster (the counters shard by customer); BROKER_URL
    # must then name the broker (a single Redis or RabbitMQ): Dramatiq's scripts are not
    # cluster safe.
    METER_REDIS_CLUSTER: bool = False
    SENTRY_DSN: str | None = None
    METER_DATA_DIR: Path = Path(".meter")
    METER_ACCEPT_PAST_DAYS: int = Field(default=35, ge=0)
    METER_ACCEPT_FUTURE_SECONDS: int = Field(default=300, ge=0)
    # How far back a plan change or a cancellation may take effect (it re-rates everything
    # since); unset: the accepted window, so the ledger still holds every event it moves.
    METER_BACKDATE_MAX_DAYS: int | None = Field(default=None, ge=0)
    METER_INVOICE_GRACE_SECONDS: int = Field(default=3600, ge=0)
    METER_POOL_MAX: int = Field(default=10, ge=1)
    # Where pending notifications (outbox rows) are POSTed, and the key that signs them.
    METER_WEBHOOK_URL: str | None = None
    METER_WEBHOOK_SECRET: SecretStr | None = None
    # Failed attempts after which a notification is dead (`meter ops notifications --dead`),
    # and how long one POST may take.
    METER_WEBHOOK_MAX_ATTEMPTS: int = Field(default=20, ge=1, le=1000)
    METER_WEBHOOK_TIMEOUT_SECONDS: float = Field(default=10.0, gt=0, le=300)
    # A worker sends a delivery run as soon as a message wrote outbox rows; off: only the
    # scheduler's sweep delivers (every 10 s).
    METER_WEBHOOK_PROMPT: bool = True
    # `meter worker`: how long an idle queue's consumer waits at most before it polls the broker
    # again (Dramatiq's worker timeout, 1000 ms by default): bounds how late an idle worker
    # notices a new message (a delivery run, an ingest batch).
    METER_WORKER_IDLE_POLL_MS: int = Field(default=100, ge=10, le=10_000)
    # Redis broker: how long a silent worker keeps its messages before they are requeued, and
    # how many commands in a million run that maintenance (fault tests shorten both).
    METER_BROKER_HEARTBEAT_TIMEOUT_MS: int = Field(default=60_000, ge=100)
    METER_BROKER_MAINTENANCE_CHANCE: int = Field(default=1000, ge=0, le=1_000_000)
    # Scheduler leader lease: a leader silent this long (frozen, stalled) loses the lock, and a
    # standby takes over at its next poll (see `storage.leader_lock`). Longer than 2 polls (5 s).
    METER_LEADER_LEASE_SECONDS: float = Field(default=DEFAULT_LEASE_SECONDS, ge=1, le=3600)
    # Apply pending schema migrations when a process first opens the database. Unset: on for
    # the embedded PostgreSQL (a fresh checkout just runs), off against a configured
    # DATABASE_URL, where `meter db migrate` runs once per release.
    METER_AUTO_MIGRATE: bool | None = None
    # Producers: a local directory where `record_usage` appends each event before returning,
    # so a killed process loses nothing (tasks/spool.py). Unset: no spool.
    METER_SPOOL_DIR: Path | None = None
    # `meter worker`'s Prometheus endpoint (workers/metrics.py); port 0 turns it off.
    METER_METRICS_HOST: str = "127.0.0.1"
    METER_METRICS_PORT: int = Field(default=9191, ge=0, le=65535)
    # The HTTP API (`meter web`): the largest request body it reads, and how many requests one
    # key may make per minute (0: no limit).
    METER_API_MAX_BODY_BYTES: int = Field(default=16 * 1024 * 1024, ge=1024)
    METER_API_RATE_LIMIT: int = Field(default=6000, ge=0)
    # How long a web process trusts a key it has checked before asking PostgreSQL again: a key
    # revoked elsewhere stops working within this many seconds (0: ask on every request).
    METER_API_KEY_CACHE_SECONDS: float = Field(default=2.0, ge=0, le=60)
    # How often a process that calls `tasks.check_limit` re-reads, in the background, the
    # counters of the customers it checked (services/limit_snapshot.py): other processes'
    # usage counts within their flush interval + ingest + this. 0: read Redis on every check.
    METER_LIMIT_REFRESH_MS: int = Field(default=50, ge=0, le=10_000)
    # Who sends the invoices (printed on every invoice and credit note, fixed on an invoice
    # when it is finalized). The address may span lines: a newline or a literal "\\n" breaks it.
    METER_SELLER_NAME: str | None = None
    METER_SELLER_ADDRESS: str | None = None
    METER_SELLER_TAX_ID: str | None = None
    METER_SELLER_EMAIL: str | None = None
    # How to pay (bank details, a payment link), printed under the totals.
    METER_PAYMENT_INSTRUCTIONS: str | None = None
    # Days from the issue date to the due date ("net 30"); a plan's `payment_terms_days` or a
    # customer's own terms (`meter customers update --payment-terms`) take precedence.
    METER_PAYMENT_TERMS_DAYS: int = Field(default=30, ge=0, le=3650)

    @property
    def auto_migrate(self) -> bool:
        """METER_AUTO_MIGRATE, or whether the database is the embedded one when it is unset."""
        if self.METER_AUTO_MIGRATE is None:
            return self.DATABASE_URL is None
        return self.METER_AUTO_MIGRATE

    @property
    def backdate_max_days(self) -> int:
        """METER_BACKDATE_MAX_DAYS, or METER_ACCEPT_PAST_DAYS when it is unset."""
        if self.METER_BACKDATE_MAX_DAYS is None:
            return self.METER_ACCEPT_PAST_DAYS
        return self.METER_BACKDATE_MAX_DAYS

    @property
    def data_dir(self) -> Path:
        """METER_DATA_DIR as an absolute path (relative values are taken from the cwd)."""
        return self.METER_DATA_DIR.expanduser().resolve()


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read from the environment on first use."""
    return Settings()


def reset_settings() -> None:
    """Forget the cached settings so the next `get_settings()` re-reads the environment."""
    get_settings.cache_clear()


def display_url(url: str) -> str:
    """`url` as messages and logs show it: without its password, whatever the form
    (`postgresql://user:pw@host/db`, `?password=pw`, a libpq `password=pw` keyword string)."""
    if "://" not in url:
        return re.sub(r"\s*\bpassword\s*=\s*('(?:[^'\\]|\\.)*'|\S*)", "", url).strip()
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}@{host}" if user else host
    query = "&".join(
        item for item in parts.query.split("&") if item and not item.lower().startswith("password=")
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
