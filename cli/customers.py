"""`meter customers ...`: customers and their subscriptions."""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import typer

from cli.inputs import parse_time
from cli.output import CliError, console, print_json, print_table

if TYPE_CHECKING:
    from services.customers import Customer, Subscription
    from storage.catalog.webhooks import CustomerWebhook

app = typer.Typer(help="Customers and their plans.", no_args_is_help=True)


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
    from services.customers import create_customer

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
    """Move a customer to another plan from a moment on (the day of a change is the new plan's).

    A change in the past (up to METER_BACKDATE_MAX_DAYS) re-rates what it covers; a change of
    currency takes effect only at a period boundary; after a cancellation it starts a new
    subscription.
    """
    from services.customers import change_plan as do_change

    customer = do_change(customer_id, plan, parse_time(at, "--at"))
    if as_json:
        print_json(asdict(customer))
    else:
        console.print(f"customer [bold]{customer.id}[/bold] now on plan {customer.plan_code}")


@app.command("cancel")
def cancel(
    customer_id: str = typer.Argument(..., metavar="ID"),
    at: str | None = typer.Option(None, "--at", help="RFC 3339 with an offset; default now."),
    at_period_end: bool = typer.Option(
        False, "--at-period-end", help="At the end of the current billing period (local)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """End a subscription now, at a moment, or at the end of the current period.

    The base fee is prorated by local days up to the end, later usage is rejected
    (no_subscription), and change-plan after the end starts a new subscription.
    """
    from services.customers import cancel as do_cancel

    if at is not None and at_period_end:
        raise CliError("--at and --at-period-end: give one or the other")
    customer = do_cancel(customer_id, parse_time(at, "--at"), at_period_end=at_period_end)
    if as_json:
        print_json(_describe(customer))
    else:
        assert customer.ends_at is not None  # noqa: S101 (invariant for mypy, not validation)
        console.print(
            f"customer [bold]{customer.id}[/bold]: subscription ends {customer.ends_at.isoformat()}"
        )


@app.command("set-webhook")
def set_webhook(
    customer_id: str = typer.Argument(..., metavar="CUSTOMER"),
    url: str | None = typer.Argument(None, metavar="URL", help="http(s) URL of the endpoint."),
    secret: str | None = typer.Option(
        None,
        "--secret",
        envvar="METER_CUSTOMER_WEBHOOK_SECRET",
        help="Signing secret for this endpoint (16+ characters); default METER_WEBHOOK_SECRET.",
    ),
    clear: bool = typer.Option(False, "--clear", help="Remove the customer's endpoint."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Send this customer's notifications to its own webhook endpoint too (every notification
    also goes to METER_WEBHOOK_URL), or stop (--clear)."""
    from services import webhooks

    if clear:
        if url is not None:
            raise CliError("--clear", "takes no URL")
        removed = webhooks.clear_webhook(customer_id)
        if as_json:
            print_json({"customer_id": customer_id, "url": None, "removed": removed})
        else:
            console.print(
                f"customer [bold]{customer_id}[/bold]: "
                + ("webhook endpoint removed" if removed else "had no webhook endpoint")
            )
        return
    if url is None:
        raise CliError("URL", "missing (or --clear to remove the endpoint)")
    hook = webhooks.set_webhook(customer_id, url, secret)
    document = {"customer_id": hook.customer_id, **_webhook(hook)}
    if as_json:
        print_json(document)
    else:
        console.print(
            f"customer [bold]{hook.customer_id}[/bold]: notifications also go to {hook.url}"
            f" (signed with {document['secret']})",
            highlight=False,
        )


@app.command("update")
def update(
    customer_id: str = typer.Argument(..., metavar="ID"),
    name: str | None = typer.Option(None, "--name", help="Name printed on its invoices."),
    address: str | None = typer.Option(
        None, "--address", help='Billing address; lines separated by newlines or "\\n".'
    ),
    email: str | None = typer.Option(None, "--email", help="Billing email address."),
    payment_terms: int | None = typer.Option(
        None, "--payment-terms", help="Days from issue to due date (its own; over the plan's)."
    ),
    clear: list[str] = typer.Option(
        [], "--clear", help="Remove a detail: name, address, email or payment-terms (repeatable)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Set a customer's billing details: what its invoices show, and its own payment terms.

    Invoices already finalized keep the details they were issued with.
    """
    from services.customers import update_details

    fields = {"name": "name", "address": "billing_address", "email": "email"}
    fields["payment-terms"] = "payment_terms_days"
    unknown = [item for item in clear if item not in fields]
    if unknown:
        raise CliError("--clear", f"unknown detail {unknown[0]!r}; one of {', '.join(fields)}")
    customer = update_details(
        customer_id,
        name=name,
        billing_address=address,
        email=email,
        payment_terms_days=payment_terms,
        clear=tuple(fields[item] for item in clear),
    )
    if as_json:
        print_json(_describe(customer))
    else:
        console.print(f"customer [bold]{customer.id}[/bold]: billing details updated")


@app.command("list")
def list_command(
    plan: str | None = typer.Option(None, "--plan", help="Only customers now on this plan."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Customers, with their plan, time zone, anchor and status."""
    from services.customers import list_customers

    found = [_describe(customer) for customer in list_customers(plan_code=plan)]
    if as_json:
        print_json(found)
        return
    print_table(
        "Customers",
        ("id", "plan", "status", "timezone", "anchor day", "since", "ends"),
        (
            (
                c["id"],
                c["plan"],
                c["status"],
                c["timezone"],
                c["anchor_day"] or "calendar",
                c["starts_at"],
                c["ends_at"],
            )
            for c in found
        ),
    )


@app.command("show")
def show(
    customer_id: str = typer.Argument(..., metavar="ID"),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """A customer: status, time zone, anchor and its plan history."""
    from services.customers import get_customer, subscriptions
    from storage.catalog.webhooks import get_webhooks

    customer = get_customer(customer_id)
    document = _describe(customer)
    document["subscriptions"] = [_subscription(s) for s in subscriptions(customer_id)]
    hook = get_webhooks([customer_id]).get(customer_id)
    document["webhook"] = _webhook(hook) if hook else None
    if as_json:
        print_json(document)
        return
    console.print(
        f"customer [bold]{customer.id}[/bold] ({document['status']}) on plan {customer.plan_code},"
        f" time zone {customer.timezone}, "
        + (f"anniversary day {customer.anchor_day}" if customer.anchor_day else "calendar months")
    )
    if hook:
        console.print(
            f"webhook endpoint {hook.url} (signed with {document['webhook']['secret']})",
            highlight=False,
        )
    print_table(
        "Plan history",
        ("plan", "version", "currency", "from", "to"),
        (
            (s["plan"], s["plan_version"], s["currency"], s["from"], s["to"] or "")
            for s in document["subscriptions"]
        ),
    )


def _webhook(hook: CustomerWebhook) -> dict[str, Any]:
    """A customer's endpoint as commands show it (never its secret)."""
    return {
        "url": hook.url,
        "secret": "own" if hook.secret else "METER_WEBHOOK_SECRET",
        "updated_at": hook.updated_at.isoformat(),
    }


def _describe(customer: Customer) -> dict[str, Any]:
    from services.customers import status

    return {
        "id": customer.id,
        "name": customer.name,
        "plan": customer.plan_code,
        "status": status(customer),
        "timezone": customer.timezone,
        "anchor_day": customer.anchor_day,
        "starts_at": customer.starts_at.isoformat(),
        "ends_at": customer.ends_at.isoformat() if customer.ends_at else None,
        "metadata": customer.metadata,
        "created_at": customer.created_at.isoformat(),
        "billing_address": customer.billing_address,
        "email": customer.email,
        "payment_terms_days": customer.payment_terms_days,
    }


def _subscription(subscription: Subscription) -> dict[str, Any]:
    """One span of the plan history, with the plan version it is rated under now (the latest
    stored version of its plan) and that plan's currency."""
    from storage.catalog.cache import catalog

    plan, version = catalog.plan(subscription.plan_code)
    return {
        "plan": subscription.plan_code,
        "plan_version": version,
        "currency": plan.currency,
        "from": subscription.starts_at.isoformat(),
        "to": subscription.ends_at.isoformat() if subscription.ends_at else None,
    }
