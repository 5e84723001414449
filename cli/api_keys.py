"""`meter api-keys create|list|revoke`: keys for the HTTP API (`meter web`)."""

from __future__ import annotations

import typer

from cli.output import console, err_console, print_json, print_table

app = typer.Typer(help="HTTP API keys: create (shown once), list, revoke.", no_args_is_help=True)


@app.command("create")
def create(
    scope: str = typer.Option(..., "--scope", help="ops, ingest or customer:ID."),
    name: str | None = typer.Option(None, "--name", help="What the key is for."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """A new key. It is printed once: only its hash is stored."""
    from services.api_keys import create as do_create

    key, text = do_create(scope, name)
    if as_json:
        print_json({**key.to_json(), "key": text})
        return
    console.print(f"API key {key.id} ({key.scope_text}); keep it, it is not shown again:")
    print(text, flush=True)


@app.command("list")
def list_(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Every key: id, scope, name, created, revoked (never the key itself)."""
    from services.api_keys import list_keys

    keys = list_keys()
    if as_json:
        print_json([key.to_json() for key in keys])
        return
    print_table(
        f"API keys ({len(keys)})",
        ["id", "scope", "name", "created", "revoked"],
        [
            (
                k.id,
                k.scope_text,
                k.name or "",
                f"{k.created_at:%Y-%m-%d %H:%M}",
                f"{k.revoked_at:%Y-%m-%d %H:%M}" if k.revoked_at else "",
            )
            for k in keys
        ],
        whole={"id", "scope"},
    )


@app.command("revoke")
def revoke(
    key_id: str = typer.Argument(..., metavar="ID", help="The key's id (or the key itself)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Revoke a key: the next request with it gets 401."""
    from services.api_keys import revoke as do_revoke

    key = do_revoke(key_id)
    if as_json:
        print_json(key.to_json())
    else:
        err_console.print(f"revoked API key {key.id} ({key.scope_text})")
