"""The analytics reports and a month's price backtest over 12 months × 10,000 customers × 3
metrics, each timed against a baseline in the same run.

Set-up (not timed, about a minute): the database `meterline_bench_analytics` is recreated and
migrated; two plans (USD and EUR, a graduated, a standard and a package charge) and N customers
(one in ten in EUR, one in fifty cancelled six months ago, one in fifty started four months
ago) are stored; then rollups, daily rollups and finalized invoices with their lines are written
directly with `generate_series` (no ingest): 12 past months and the current one for the rollups
and the daily rollups, the 12 past months for the invoices, whose amounts are the plans' prices
computed in SQL; the revenue pre-aggregates (migration 0017) are rebuilt from those invoices
(as its backfill does). VACUUM ANALYZE. Redis is pointed at a closed port: a report that
touched it would fail.

Timed: each report through `services.analytics` (what `meter analytics ... --json` runs, minus
printing), the best of 3 runs after one warm-up run; the month's backtest under another plan
and under the same plan (whose difference must be 0: the SQL prices equal the invoice code's).
Baselines, in the same run: the invoice reports reading the invoices and their lines
themselves (the pre-aggregate tables swapped for views that compute the same rows from every
invoice and line, so that the very same report code runs); the usage trends without the 0012
index on the daily rollups; the backtest as the invoice path does it, one customer at a time
(`rollups.snapshot` per segment, then the same pricing), on --baseline customers, scaled.

    .venv/bin/python -m bench.bench_analytics [--customers 10000] [--baseline 500]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
from psycopg import sql

POSTGRES_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
DATABASE = "meterline_bench_analytics"

PLAN = """
code: {code}
name: Bench {currency}
currency: {currency}
base_fee: "{base}"
tax_rate: "0.10"
metrics:
  api_calls:  {{aggregation: sum}}
  storage_gb: {{aggregation: max}}
  emails:     {{aggregation: count}}
charges:
  - metric: api_calls
    model: graduated
    tiers:
      - {{up_to: 10000, unit_amount: "0"}}
      - {{up_to: 1000000, unit_amount: "0.001"}}
      - {{up_to: null, unit_amount: "0.0005"}}
  - {{metric: storage_gb, model: standard, unit_amount: "0.10", included: 5}}
  - {{metric: emails, model: package, package_size: 1000, package_amount: "1.00", included: 1000}}
"""
#: The candidate plan of the backtest: a higher base fee, a smaller free tier.
CANDIDATE = PLAN.format(code="pro-2027", currency="USD", base="39.00").replace(
    "up_to: 10000,", "up_to: 5000,"
)

_SEED = """
ALTER TABLE usage_daily DROP CONSTRAINT usage_daily_pkey;
DROP INDEX usage_daily_day_idx;
DROP INDEX usage_daily_metric_day_idx;
CREATE TEMP TABLE cm AS
WITH c AS (
  SELECT format('cus_%%s', lpad(i::text, 5, '0')) AS id,
         CASE WHEN i %% 10 = 0 THEN 'pro-eu' ELSE 'pro' END AS plan,
         CASE WHEN i %% 50 = 2 THEN 4 ELSE 13 END AS first_back,
         CASE WHEN i %% 50 = 1 THEN 6 ELSE 0 END AS last_back
  FROM generate_series(0, %(n)s - 1) AS i
), m AS (
  SELECT back, (date_trunc('month', now() AT TIME ZONE 'UTC') - make_interval(months => back))
         AT TIME ZONE 'UTC' AS start
  FROM generate_series(0, 12) AS back
)
SELECT c.id, c.plan, m.back, m.start,
       CASE WHEN m.back = 0 THEN now() ELSE m.start + interval '1 month' END AS usage_end,
       m.start + interval '1 month' AS finish,
       5000 + abs(hashtext(c.id || m.back)) %% 200000 AS api,
       abs(hashtext(m.back || c.id)) %% 50 AS storage,
       abs(hashtext(c.id || 'e' || m.back)) %% 5000 AS emails
FROM c JOIN m ON m.back < c.first_back AND m.back >= c.last_back;

INSERT INTO customers (id, plan_code, timezone, starts_at, ends_at)
SELECT id, plan, 'UTC', min(start), CASE WHEN min(back) > 0 THEN max(finish) END
FROM cm GROUP BY id, plan;
INSERT INTO subscriptions (customer_id, plan_code, starts_at, ends_at)
SELECT id, plan_code, starts_at, ends_at FROM customers;

INSERT INTO usage_periods (customer_id, period_start, period_end, version)
SELECT id, start, finish, 1 FROM cm;
INSERT INTO usage_rollups (customer_id, metric, period_start, period_end, event_count, total,
                           maximum)
SELECT id, 'api_calls', start, finish, greatest(api / 10, 1), api, 10 FROM cm
UNION ALL SELECT id, 'storage_gb', start, finish, 30, storage * 30, storage FROM cm
UNION ALL SELECT id, 'emails', start, finish, emails, emails, 1 FROM cm;

INSERT INTO usage_daily (customer_id, metric, day, event_count, total)
SELECT cm.id, x.metric, d::date, greatest(x.amount / 300, 1), round(x.amount::numeric / 30, 6)
FROM cm
CROSS JOIN LATERAL (VALUES ('api_calls', cm.api), ('storage_gb', cm.storage),
                           ('emails', cm.emails)) AS x(metric, amount)
CROSS JOIN LATERAL generate_series(cm.start, cm.usage_end - interval '1 day', interval '1 day')
  AS d;

ALTER TABLE usage_daily ADD PRIMARY KEY (customer_id, metric, day);
CREATE INDEX usage_daily_day_idx ON usage_daily (day);
CREATE INDEX usage_daily_metric_day_idx ON usage_daily (metric, day) INCLUDE (event_count, total);

CREATE TEMP TABLE priced AS
SELECT cm.*, CASE WHEN plan = 'pro' THEN 'USD' ELSE 'EUR' END AS currency,
       CASE WHEN plan = 'pro' THEN 29.00 ELSE 25.00 END AS base,
       round(greatest(least(api, 1000000) - 10000, 0) * 0.001
             + greatest(api - 1000000, 0) * 0.0005, 2) AS api_amount,
       round(greatest(storage - 5, 0) * 0.10, 2) AS storage_amount,
       ceil(greatest(emails - 1000, 0) / 1000.0) * 1.00 AS emails_amount,
       format('inv_%%s_%%s', id, back) AS invoice_id,
       row_number() OVER (ORDER BY start, id) AS number
FROM cm WHERE back > 0;

INSERT INTO invoices (id, customer_id, period_start, period_end, period_label, timezone,
    plan_code, plan_version, currency, status, number, subtotal, tax, total, document,
    finalized_at)
SELECT invoice_id, id, start, finish, to_char(start AT TIME ZONE 'UTC', 'YYYY-MM'), 'UTC',
       plan, 1, currency, 'finalized', number,
       base + api_amount + storage_amount + emails_amount,
       round((base + api_amount + storage_amount + emails_amount) * 0.10, 2),
       base + api_amount + storage_amount + emails_amount
         + round((base + api_amount + storage_amount + emails_amount) * 0.10, 2),
       '{}'::jsonb, finish + interval '2 hours'
FROM priced;

INSERT INTO invoice_lines (invoice_id, position, kind, metric, model, quantity, amount, detail,
                           segment_start)
SELECT invoice_id, 0, 'base_fee', NULL, NULL, NULL, base, '{}'::jsonb, start FROM priced
UNION ALL SELECT invoice_id, 1, 'usage', 'api_calls', 'graduated', api, api_amount, '{}', start
  FROM priced
UNION ALL SELECT invoice_id, 2, 'usage', 'storage_gb', 'standard', storage, storage_amount, '{}',
  start FROM priced
UNION ALL SELECT invoice_id, 3, 'usage', 'emails', 'package', emails, emails_amount, '{}', start
  FROM priced;
"""


def read_the_invoices(url: str) -> None:
    """The baseline: the pre-aggregate tables become views over every invoice and line (the
    reports then read those, as they did before migration 0017), and the usage trend loses
    the 0012 index on the daily rollups."""
    from storage.analytics.revenue_months import from_invoices

    invoices, lines = from_invoices()
    at = "split_part(month, '-', 1)::integer * 12 + split_part(month, '-', 2)::integer - 1"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("ALTER TABLE revenue_months RENAME TO revenue_months_kept")
        conn.execute("ALTER TABLE revenue_month_lines RENAME TO revenue_month_lines_kept")
        conn.execute(
            f"CREATE VIEW revenue_months AS SELECT *, {at} AS at FROM ({invoices})"
            " v(month, currency, customer_id, plan_code, months, invoices, subtotal, tax,"
            " total, base_fee, lines)"
        )
        conn.execute(
            f"CREATE VIEW revenue_month_lines AS SELECT * FROM ({lines})"
            " v(month, currency, kind, metric, lines, amount, quantity)"
        )
        conn.execute("DROP INDEX usage_daily_metric_day_idx")


def setup(customers: int) -> str:
    """Recreate and seed the benchmark database; returns its URL."""
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        name = sql.Identifier(DATABASE)
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(name))
    url = POSTGRES_URL.rsplit("/", 1)[0] + f"/{DATABASE}"
    os.environ.update(DATABASE_URL=url, REDIS_URL="redis://127.0.0.1:1/0", METER_AUTO_MIGRATE="1")
    from storage.settings import reset_settings

    reset_settings()
    from pricing.plans import load_plan
    from storage import db
    from storage.catalog.plans import apply_plan

    apply_plan(load_plan(PLAN.format(code="pro", currency="USD", base="29.00")))
    apply_plan(load_plan(PLAN.format(code="pro-eu", currency="EUR", base="25.00")))
    from storage.analytics import revenue_months

    started = time.perf_counter()
    with db.connection() as conn, conn.transaction():
        for statement in filter(str.strip, _SEED.split(";\n")):
            conn.execute(statement, {"n": customers})
        revenue_months.rebuild(conn)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
        counts = {
            table: conn.execute(
                sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))
            ).fetchone()[0]  # type: ignore[index]
            for table in (
                *("customers", "usage_rollups", "usage_daily", "invoices", "invoice_lines"),
                *("revenue_months", "revenue_month_lines"),
            )
        }
    print(f"seeded in {time.perf_counter() - started:.1f} s: {counts}")
    return url


#: This process's CPU seconds in the last `timed` run (what the Python side cost; the rest of
#: the wall time is PostgreSQL and waiting for a core on a shared machine).
last_cpu = 0.0


def timed(run: Callable[[], Any], repeat: int = 3) -> tuple[float, Any]:
    """(best of `repeat` runs after a warm-up, in seconds; the last result)."""
    global last_cpu
    result = run()
    times = []
    for _ in range(repeat):
        started, cpu = time.perf_counter(), time.process_time()
        result = run()
        times.append(time.perf_counter() - started)
        last_cpu = time.process_time() - cpu
    return min(times), result


def calibration(url: str) -> float:
    """Seconds PostgreSQL takes to sum every invoice line (a plain scan of ~470k rows): the
    yardstick of the machine's speed at that moment."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET jit = off")
        conn.execute("SELECT count(*), sum(amount) FROM invoice_lines")
        started = time.perf_counter()
        conn.execute("SELECT count(*), sum(amount) FROM invoice_lines")
        return time.perf_counter() - started


def month(back: int) -> str:
    first = datetime.now(UTC).date().replace(day=1)
    index = first.year * 12 + first.month - 1 - back
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


def reports() -> dict[str, Callable[[], Any]]:
    from services import analytics

    now = datetime.now(UTC)
    first, last = month(12), month(1)
    today = now.date()
    return {
        "revenue (12 months)": lambda: analytics.revenue(first, last, now=now),
        "revenue --by plan": lambda: analytics.revenue(first, last, by="plan", now=now),
        "revenue --by metric": lambda: analytics.revenue(first, last, by="metric", now=now),
        "revenue --by customer": lambda: analytics.revenue(first, last, by="customer", now=now),
        "mrr (12 months, trailing 3)": lambda: analytics.mrr(last),
        "overage (12 months)": lambda: analytics.overage(first, last),
        "customers --top 10 --by revenue": lambda: analytics.top_customers(first, last),
        "customers --top 10 --by growth": lambda: analytics.top_customers(first, last, by="growth"),
        "usage --metric api_calls (30 days)": lambda: analytics.usage_trend(
            "api_calls", today - timedelta(days=29), today
        ),
        "usage --metric api_calls (365 days)": lambda: analytics.usage_trend(
            "api_calls", today - timedelta(days=364), today
        ),
        "usage --metric api_calls --customer (365 days)": lambda: analytics.usage_trend(
            "api_calls", today - timedelta(days=364), today, "cus_00042"
        ),
        "near-limit --threshold 80 (live)": lambda: analytics.near_limit(Decimal(80), now),
        "revenue estimate, current period (live)": lambda: analytics.current_estimate(now),
    }


def per_customer_backtest(label: str, count: int) -> float:
    """The baseline: the invoice path's way, one customer at a time (a snapshot per segment,
    then the same pricing under the candidate plan; reading each invoice is left out, in the
    baseline's favour), for `count` customers; seconds."""
    from pricing.plans import load_plan
    from services import repricing
    from storage.analytics.usage import SegmentUsage
    from storage.catalog.cache import load_contexts
    from storage.usage import rollups

    plan = load_plan(CANDIDATE)
    started = time.perf_counter()
    contexts = load_contexts([f"cus_{i:05d}" for i in range(1, count * 10) if i % 10][:count])
    periods, _ = repricing.periods_for_label(contexts.values(), label, datetime.now(UTC))
    for period in periods:
        usage = {}
        for key in period.keys:
            snap = rollups.snapshot(*key)
            usage[key] = SegmentUsage(snap.state, {m: set(v) for m, v in snap.uniques.items()})
        repricing.under_plan(plan, period, usage)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--baseline", type=int, default=500)
    args = parser.parse_args()
    revision = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    print(
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, revision {revision}, {args.customers:,}"
        f" customers, load average {os.getloadavg()[0]:.1f}"
    )
    url = setup(args.customers)
    from pricing.plans import load_plan
    from services.backtest import backtest

    print(
        f"\ncalibration: a plain sum over every invoice line {calibration(url) * 1000:.0f} ms"
        f" (load average {os.getloadavg()[0]:.1f})"
    )
    print(f"{'report':<48} {'time':>9}  {'rows':>6}  {'client CPU':>10}")
    results: dict[str, float] = {}
    documents: dict[str, Any] = {}
    for name, run in reports().items():
        seconds, document = timed(run)
        results[name], documents[name] = seconds, document
        rows = len(document.get("rows", document.get("currencies", [])))
        print(f"{name:<48} {seconds * 1000:>7.0f} ms  {rows:>6}  {last_cpu * 1000:>7.0f} ms")

    label = month(1)
    candidate = load_plan(CANDIDATE)
    same = load_plan(PLAN.format(code="pro", currency="USD", base="29.00"))
    backtest_s, document = timed(lambda: backtest(candidate, label, now=datetime.now(UTC)), 1)
    print(
        f"\nbacktest {label} under pro-2027, {len(document['rows'])} customers:"
        f" {backtest_s:.2f} s (client CPU {last_cpu:.2f} s)  totals {document['totals']}"
    )
    seconds_same, same_doc = timed(lambda: backtest(same, label, now=datetime.now(UTC)), 1)
    diff = same_doc["totals"][0]["difference"]
    print(
        f"backtest {label} under the same plan: {seconds_same:.2f} s, difference {diff}"
        " (0.00: the seeded invoices equal the invoice code's prices)"
    )
    baseline = per_customer_backtest(label, args.baseline)
    scaled = baseline * len(document["rows"]) / args.baseline
    print(
        f"baseline, one customer at a time: {args.baseline} customers in {baseline:.2f} s,"
        f" {scaled:.1f} s scaled to {len(document['rows'])}: {scaled / backtest_s:.1f}× slower"
    )

    read_the_invoices(url)
    print("\nbaseline: the same reports reading every invoice and line (no 0017 pre-aggregates)")
    for name, run in reports().items():
        if "live" in name:
            continue
        seconds, document = timed(run)
        verdict = "same document" if document == documents[name] else "DIFFERENT DOCUMENT"
        print(
            f"{name:<48} {seconds * 1000:>7.0f} ms  ({seconds / results[name]:.1f}× the fast"
            f" path; {verdict})"
        )
    worst = max(v for k, v in results.items() if "live" not in k)
    print(
        f"\nslowest invoice/rollup report: {worst * 1000:.0f} ms (target ≤ 1 s);"
        f" backtest {backtest_s:.2f} s (target ≤ 10 s); load average {os.getloadavg()[0]:.1f}"
    )


if __name__ == "__main__":
    main()
