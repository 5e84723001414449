"""`meter customers ...`: customers and their subscriptions."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime

import typer

from cli.output import CliError, console, print_json

app = typer.Typer(help="Customers and their plans.", no_args_is_help=True)


def parse_time(raw: str | None, option: str) -> datetime | None:
    if raw is None:
        return None
    try:
        value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError as exc:
        raise CliError(f"{option}: not an RFC 3339 timestamp: {raw!r}") from exc
    return value if value.tzinfo else value.replace(tzinfo=UTC)


@app.command("create")
def create(
    customer_id: str = typer.Argument(..., metavar="ID"),
    plan: str = typer.Option(..., "--plan", help="Plan code."),
    timezone: str = typer.Option("UTC", "--timezone", help="IANA time zone of its periods."),
    anchor_day: int | None = typer.Option(None, "--anchor-day", help="Anniversary day 1-31."),
    starts_at: str | None = typer.Option(None, "--starts-at", help="RFC 3339; default now."),
    name: str | None = typer.Option(None, "--name"),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Create a customer on a plan."""
    from storage.customers import create_customer

    customer = create_customer(
        customer_id,
        plan,
        timezone=timezone,
        anchor_day=anchor_day,
        starts_at=parse_time(starts_at, "--starts-at"),
        name=name,
    )
    if as_json:
        print_json(asdict(customer))
    else:
        console.print(f"customer [bold]{customer.id}[/bold] on plan {customer.plan_code}")


@app.command("change-plan")
def change_plan(
    customer_id: str = typer.Argument(..., metavar="ID"),
    plan: str = typer.Option(..., "--plan", help="New plan code."),
    at: str | None = typer.Option(None, "--at", help="RFC 3339; default now."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Move a customer to another plan from a moment on (the day of a change is the new plan's)."""
    from storage.customers import change_plan as do_change

    customer = do_change(customer_id, plan, parse_time(at, "--at") or datetime.now(UTC))
    if as_json:
        print_json(asdict(customer))
    else:
        console.print(f"customer [bold]{customer.id}[/bold] now on plan {customer.plan_code}")
