"""`meter web`: the HTTP API and dashboards under uvicorn (what the Procfile's `web:` runs)."""

from __future__ import annotations

import os

import typer

from cli.output import CliError


def web(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    port: int = typer.Option(8000, "--port", help="Port to listen on."),
    workers: int = typer.Option(1, "--workers", "-w", help="Worker processes."),
) -> None:
    """Serve the HTTP API (`/v1/...`, OpenAPI at `/openapi.json`, docs at `/docs`)."""
    if workers < 1:
        raise CliError(f"--workers: must be at least 1, got {workers}")
    if not 0 < port < 65536:
        raise CliError(f"--port: must be 1 to 65535, got {port}")
    import uvicorn

    from storage import db
    from storage.embedded import broker_url, database_url, redis_url

    # Start (or find) the embedded servers once here, so the web processes share them.
    os.environ.setdefault("DATABASE_URL", database_url())
    os.environ.setdefault("REDIS_URL", redis_url())
    os.environ.setdefault("BROKER_URL", broker_url())
    db.pool()  # refuse to start on a database it cannot use (unreachable, schema behind)
    db.close_pool()  # each web process opens its own
    uvicorn.run(
        "api.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        timeout_graceful_shutdown=10,
        log_level="info",
    )
