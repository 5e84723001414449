"""PostgreSQL's CPU for the ingest batch statement, shipped against its previous form, on the same
batch: `python -m bench.bench_batch_sql`.

Ingests a few warm-up batches of random events over the example API plan's customers (so the
indexes hold rows), keeps the last batch's parameters, then replays that batch with fresh event
ids through each statement in turn, alternated, each in a transaction rolled back, and reads the
backend's CPU time from /proc around the statement (the server runs on this machine). The
shipped statement is the one for a batch of new events (plain inserts, `WRITE_NEW_BATCH`); the
baseline is the statement before it, which every batch used (conflict checks on the ids and a
join with the ids inserted, `WRITE_BATCH`, now sent only when a batch holds a known event).
`--explain` also prints both statements' plans. Uses its own benchmark database and a claimed
Redis db.

    .venv/bin/python -m bench.bench_batch_sql [--batch-size 20000] [--warmup 5] [--rounds 10]
        [--customers 1000] [--explain]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
from datetime import UTC, datetime
from typing import Any

import msgspec

from bench.common import setup_api_customers, use_bench_servers


def _backend_cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _events(customers: list[str], count: int, prefix: str, rng: random.Random) -> list[Any]:
    now = datetime.now(UTC).isoformat()
    metrics = ["api_calls"] * 8 + ["bandwidth_gb", "storage_gb"]
    return [
        {
            "event_id": f"{prefix}-{i}",
            "customer_id": rng.choice(customers),
            "metric": rng.choice(metrics),
            "quantity": str(rng.randint(1, 500)),
            "timestamp": now,
            "properties": {},
        }
        for i in range(count)
    ]


def _explain(conn: Any, statement: str, params: dict[str, Any], events: list[Any]) -> None:
    """EXPLAIN (ANALYZE, BUFFERS, WAL) of one replay, rolled back: where the time goes."""
    fresh = [dict(e, event_id=f"explain-{i}") for i, e in enumerate(events)]
    params["events"] = msgspec.json.encode(fresh).decode()
    rows = conn.execute("EXPLAIN (ANALYZE, BUFFERS, WAL) " + statement, params).fetchall()
    conn.rollback()
    print("\n".join(row[0] for row in rows))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=20_000)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument(
        "--explain", action="store_true", help="also print the shipped statement's plan"
    )
    args = parser.parse_args(argv)
    servers = use_bench_servers()
    try:
        customers = setup_api_customers(args.customers)
        from services.ingest import ingest_batch
        from storage import db
        from storage.ledger import batch_write

        captured: dict[str, Any] = {}
        write = batch_write.write_batch

        def capture(conn: Any, batch_id: str, events: Any, routes: Any, **kw: Any) -> Any:
            captured.update(batch_id=batch_id, events=events, routes=routes, **kw)
            return write(conn, batch_id, events, routes, **kw)

        batch_write.write_batch = capture  # type: ignore[assignment]
        rng = random.Random(1)
        for n in range(args.warmup):
            ingest_batch(f"warm-{n}", _events(customers, args.batch_size, f"w{n}", rng))
        events = msgspec.to_builtins(captured["events"])
        params = {
            "routes": msgspec.json.encode(captured["routes"]).decode(),
            "received_at": captured["received_at"],
            "batch_id": captured["batch_id"],
            "duplicates": 0,
            "candidates": len(events),
            "rejected": 0,
        }
        statements = {"shipped": batch_write.WRITE_NEW_BATCH, "before": batch_write.WRITE_BATCH}
        cpu: dict[str, list[float]] = {name: [] for name in statements}
        with db.connection() as conn:
            row = conn.execute("SELECT pg_backend_pid()").fetchone()
            pid = int(row[0]) if row else 0
            conn.rollback()
            if args.explain:
                for statement in statements.values():
                    _explain(conn, statement, params, events)
            for r in range(args.rounds):
                order = list(statements) if r % 2 == 0 else list(statements)[::-1]
                for name in order:
                    fresh = [dict(e, event_id=f"r{r}-{name}-{i}") for i, e in enumerate(events)]
                    params["events"] = msgspec.json.encode(fresh).decode()
                    start = _backend_cpu(pid)
                    conn.execute(statements[name], params).fetchall()
                    cpu[name].append(_backend_cpu(pid) - start)
                    conn.rollback()
        n = len(events)
        print(f"one batch of {n:,} events over {args.customers:,} customers, {args.rounds} rounds")
        for name, seconds in cpu.items():
            print(
                f"  {name:8} PostgreSQL CPU {statistics.median(seconds) / n * 1e6:6.2f} µs/event"
                f" median, {statistics.mean(seconds) / n * 1e6:6.2f} mean"
            )
        ratio = statistics.median(cpu["before"]) / max(statistics.median(cpu["shipped"]), 1e-9)
        print(f"ratio: before / shipped = {ratio:.2f}x (load average {os.getloadavg()[0]:.1f})")
    finally:
        servers.release()


if __name__ == "__main__":
    main()
