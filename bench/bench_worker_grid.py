"""Which worker processes × threads give this machine the best end-to-end ingest, for Meterline
and for the one-message-per-event baseline, the settings alternated in one run.

    .venv/bin/python -m bench.bench_worker_grid [--grid 1x4,2x2,2x4,3x2,2x8] [--rounds 2]
        [--baseline-grid 2x4,2x8,2x16] [bench_ingest's options: --events, --batch-size, ...]

Each round runs every setting once, in order, so a change in the machine's load falls on all
of them alike; the summary gives each setting's median and every round's figure. Meterline's
phases are `bench_ingest`'s (the recorder at its defaults unless told otherwise, exactness
checked every time) without its latency run; the baseline's phases are `bench_ingest`'s too.
`cli/worker.py`'s DEFAULT_PROCESSES × DEFAULT_THREADS should be the best of the grid.
"""

from __future__ import annotations

import copy
import statistics
import tempfile
from pathlib import Path

from bench import common
from bench.bench_ingest import _close_clients, bench_meterline, bench_naive, build_parser
from cli.worker import DEFAULT_PROCESSES, DEFAULT_THREADS


def _settings(text: str) -> list[tuple[int, int]]:
    pairs = []
    for cell in text.split(","):
        processes, threads = cell.lower().split("x")
        pairs.append((int(processes), int(threads)))
    return pairs


def _summary(label: str, figures: dict[tuple[int, int], list[float]]) -> None:
    print(f"\n{label}: events/s end to end per processes × threads (median; every round)")
    best = max(figures, key=lambda k: statistics.median(figures[k]))
    for (processes, threads), rates in figures.items():
        mark = " <- best" if (processes, threads) == best else ""
        default = " (meter worker's default)" if (processes, threads) == (
            DEFAULT_PROCESSES, DEFAULT_THREADS
        ) else ""  # fmt: skip
        rounds = ", ".join(f"{r:,.0f}" for r in rates)
        print(
            f"  {processes} × {threads:<3} {statistics.median(rates):>9,.0f}   ({rounds})"
            f"{default}{mark}"
        )


def main(argv: list[str] | None = None) -> None:
    parser = build_parser(__doc__.splitlines()[0])
    parser.add_argument("--grid", default="1x4,2x2,2x4,3x2,2x8", help="Meterline's settings")
    parser.add_argument("--baseline-grid", default="2x4,2x8,2x16", help="the baseline's")
    parser.add_argument("--rounds", type=int, default=2)
    parser.set_defaults(events=300_000, baseline_events=10_000, latency_seconds=0)
    args = parser.parse_args(argv)
    grid, baseline_grid = _settings(args.grid), _settings(args.baseline_grid)

    servers = common.use_bench_servers()
    logs = Path(tempfile.mkdtemp(prefix="meterline-bench-grid-"))
    fast: dict[tuple[int, int], list[float]] = {setting: [] for setting in grid}
    naive: dict[tuple[int, int], list[float]] = {setting: [] for setting in baseline_grid}
    exact = True
    try:
        print(f"machine: {common.machine_line()}; worker logs in {logs}")
        customers = common.setup_api_customers(args.customers)
        for round_ in range(1, args.rounds + 1):
            for processes, threads in baseline_grid:
                print(f"\n== round {round_}: baseline {processes} × {threads}")
                run = copy.copy(args)
                run.workers, run.baseline_threads = processes, threads
                rate, ok = bench_naive(run, customers, logs)
                naive[(processes, threads)].append(rate)
                exact &= ok
            for processes, threads in grid:
                print(f"\n== round {round_}: Meterline {processes} × {threads}, "
                      f"{common.machine_line()}")  # fmt: skip
                run = copy.copy(args)
                run.workers, run.threads = processes, threads
                rate, ok = bench_meterline(run, customers, logs)
                fast[(processes, threads)].append(rate)
                exact &= ok
        _summary("baseline (one message per event)", naive)
        _summary("Meterline", fast)
        print(f"machine after: {common.machine_line()}")
        if not exact:
            raise SystemExit(1)
    finally:
        _close_clients()
        servers.release()


if __name__ == "__main__":
    main()
