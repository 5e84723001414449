"""Stored HTTP API keys: only the SHA-256 of each key's secret, never the key.

A key reads `ml_<id>_<secret>`: the id finds the row, and the secret's hash is compared in
constant time (`hmac.compare_digest`), so neither a timing nor the table reveals a key.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg.rows import dict_row

from pricing.errors import echo
from storage import db
from storage.errors import NotFound

PREFIX = "ml_"
_ID_BYTES = 6  # 12 hex digits: ids of distinct keys do not collide in practice
_SECRET_BYTES = 32


@dataclass(frozen=True)
class ApiKey:
    id: str
    scope: str  # ops | ingest | customer
    customer_id: str | None
    name: str | None
    created_at: datetime
    revoked_at: datetime | None

    @property
    def scope_text(self) -> str:
        """The scope as `meter api-keys create --scope` takes it (`customer:cus_42`)."""
        return f"customer:{self.customer_id}" if self.scope == "customer" else self.scope

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "scope": self.scope_text,
            "name": self.name,
            "created_at": self.created_at.isoformat(),
            "revoked_at": None if self.revoked_at is None else self.revoked_at.isoformat(),
        }


def _hash(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def create_key(
    scope: str, customer_id: str | None, name: str | None, *, conn: db.Connection | None = None
) -> tuple[ApiKey, str]:
    """Store a new key; return it with the full key text (the only time it exists)."""
    key_id = secrets.token_hex(_ID_BYTES)
    secret = secrets.token_urlsafe(_SECRET_BYTES)
    with db.transaction(conn) as tx:
        row = (
            tx.cursor(row_factory=dict_row)
            .execute(
                f"INSERT INTO api_keys (id, secret_hash, scope, customer_id, name)"  # noqa: S608 (constant SQL text; values are parameters)
                f" VALUES (%s, %s, %s, %s, %s) RETURNING {_COLUMNS}",
                (key_id, _hash(secret), scope, customer_id, name),
            )
            .fetchone()
        )
    assert row is not None  # noqa: S101 (invariant for mypy, not validation)
    return ApiKey(**row), f"{PREFIX}{key_id}_{secret}"


def authenticate(key: str) -> ApiKey | None:
    """The live (not revoked) key `key` is, or None: malformed, unknown, wrong or revoked."""
    if not key.startswith(PREFIX):
        return None
    key_id, sep, secret = key[len(PREFIX) :].partition("_")
    if not sep or not key_id or not secret or len(key) > 200:
        return None
    with db.connection() as conn:
        row = (
            conn.cursor(row_factory=dict_row)
            .execute(
                f"SELECT {_COLUMNS}, secret_hash FROM api_keys"  # noqa: S608 (constant SQL text; values are parameters)
                " WHERE id = %s AND revoked_at IS NULL",
                (key_id,),
            )
            .fetchone()
        )
    if row is None:
        return None
    stored = bytes(row.pop("secret_hash"))
    return ApiKey(**row) if hmac.compare_digest(stored, _hash(secret)) else None


def list_keys(*, conn: db.Connection | None = None) -> list[ApiKey]:
    """Every key, revoked ones too, oldest first."""
    with db.transaction(conn) as tx:
        rows = (
            tx.cursor(row_factory=dict_row)
            .execute(f"SELECT {_COLUMNS} FROM api_keys ORDER BY created_at, id")  # noqa: S608 (constant SQL text; values are parameters)
            .fetchall()
        )
    return [ApiKey(**row) for row in rows]


def revoke_key(key_id: str, now: datetime, *, conn: db.Connection | None = None) -> ApiKey:
    """Revoke the key (a key revoked already keeps its first revocation time)."""
    key_id = key_id.removeprefix(PREFIX).partition("_")[0]
    with db.transaction(conn) as tx:
        row = (
            tx.cursor(row_factory=dict_row)
            .execute(
                "UPDATE api_keys SET revoked_at = coalesce(revoked_at, %s)"  # noqa: S608 (constant SQL text; values are parameters)
                f" WHERE id = %s RETURNING {_COLUMNS}",
                (now, key_id),
            )
            .fetchone()
        )
    if row is None:
        raise NotFound(f"id: no API key {echo(key_id)}")
    return ApiKey(**row)


_COLUMNS = "id, scope, customer_id, name, created_at, revoked_at"
