"""Stored plans: every distinct content of a plan file is an immutable, numbered version.

Invoices record the plan version they were priced with, so a version is never changed: applying
a file whose content differs from the latest version stores version + 1, applying the same
content again is a no-op.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from psycopg.types.json import Json

from pricing.errors import echo
from pricing.plans import Plan, load_plan, plan_content_hash, plan_to_dict
from storage import db
from storage.errors import NotFound

# Namespace of the advisory locks taken per plan code (the two-key form keeps it apart from
# other modules' locks).
_LOCK_NAMESPACE = "meterline.plans"


@dataclass(frozen=True)
class PlanRow:
    """A stored plan as listed: its latest version, and how many versions exist."""

    code: str
    name: str
    currency: str
    version: int
    versions: int
    created_at: datetime  # when the latest version was stored


def apply_plan(plan: Plan, *, conn: db.Connection | None = None) -> tuple[int, bool]:
    """Store `plan` unless its latest version has the same content: (version, created)."""
    content_hash = plan_content_hash(plan)
    with db.transaction(conn) as tx:
        # Two concurrent applies of one code must not both insert the same next version.
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtext(%s), hashtext(%s))",
            (_LOCK_NAMESPACE, plan.code),
        )
        latest = tx.execute(
            "SELECT version, content_hash FROM plans WHERE code = %s ORDER BY version DESC LIMIT 1",
            (plan.code,),
        ).fetchone()
        if latest is not None and latest[1] == content_hash:
            return int(latest[0]), False
        version = 1 if latest is None else int(latest[0]) + 1
        tx.execute(
            "INSERT INTO plans (code, version, content_hash, definition) VALUES (%s, %s, %s, %s)",
            (plan.code, version, content_hash, Json(plan_to_dict(plan))),
        )
    return version, True


def get_plan(
    code: str, version: int | None = None, *, conn: db.Connection | None = None
) -> tuple[Plan, int]:
    """Plan `code` at `version` (the latest when None) and its version number; NotFound if none."""
    with db.transaction(conn) as tx:
        row = tx.execute(
            "SELECT definition, version FROM plans WHERE code = %(code)s"
            " AND (%(version)s::integer IS NULL OR version = %(version)s)"
            " ORDER BY version DESC LIMIT 1",
            {"code": code, "version": version},
        ).fetchone()
    if row is None:
        which = f"plan {echo(code)}" if version is None else f"plan {echo(code)} version {version}"
        raise NotFound(f"plan_code: no {which}")
    definition, stored_version = row
    return load_plan(definition), int(stored_version)


def list_plans(*, conn: db.Connection | None = None) -> list[PlanRow]:
    """Every stored plan, by code, with its latest version's name and currency."""
    with db.transaction(conn) as tx:
        rows = tx.execute(
            "SELECT DISTINCT ON (code) code, definition->>'name', definition->>'currency',"
            " version, count(*) OVER (PARTITION BY code), created_at"
            " FROM plans ORDER BY code, version DESC"
        ).fetchall()
    return [
        PlanRow(
            code=code,
            name=name or code,
            currency=currency or "",
            version=version,
            versions=versions,
            created_at=created_at,
        )
        for code, name, currency, version, versions, created_at in rows
    ]


def plan_exists(conn: db.Connection, code: str) -> bool:
    """Whether any version of plan `code` is stored."""
    row = conn.execute("SELECT 1 FROM plans WHERE code = %s LIMIT 1", (code,)).fetchone()
    return row is not None
