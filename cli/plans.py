"""`meter plans ...`: validate and store plan files; a changed plan becomes a new version."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from cli.output import console, print_json, print_table

app = typer.Typer(help="Plans: pricing as configuration.", no_args_is_help=True)


def load_plan_file(path: Path) -> Any:
    """The plan in `path`; a `PlanError` whose every field path starts with the file's."""
    from pricing.plans import PlanError, load_plan

    try:
        return load_plan(path.read_text())
    except PlanError as exc:
        raise PlanError([(f"{path}: {p}" if p else str(path), r) for p, r in exc.errors]) from None


@app.command("apply")
def apply(
    files: list[Path] = typer.Argument(..., exists=True, dir_okay=False, help="Plan files."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Validate every file first, then store them: one bad file stores nothing."""
    from storage.catalog.plans import apply_plan

    loaded = [load_plan_file(path) for path in files]
    results = []
    for plan in loaded:
        version, created = apply_plan(plan)
        results.append({"code": plan.code, "version": version, "created": created})
    if as_json:
        print_json({"plans": results})
        return
    for row in results:
        state = "stored as version" if row["created"] else "unchanged, version"
        console.print(f"plan [bold]{row['code']}[/bold]: {state} {row['version']}")


@app.command("list")
def list_(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Stored plans with their latest version."""
    from storage.catalog.plans import list_plans

    rows = list_plans()
    if as_json:
        print_json(
            {
                "plans": [
                    {
                        "code": r.code,
                        "name": r.name,
                        "currency": r.currency,
                        "version": r.version,
                        "versions": r.versions,
                        "created_at": r.created_at,
                    }
                    for r in rows
                ]
            }
        )
        return
    print_table(
        "Plans",
        ["code", "name", "currency", "version", "versions"],
        [(r.code, r.name, r.currency, r.version, r.versions) for r in rows],
    )
