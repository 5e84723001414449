"""The application: `create_app()` builds the FastAPI app that `meter web` serves.

Start-up installs the configured broker (the one place a web process chooses it, as the worker
and the scheduler do); shutdown sends the events still buffered, after the requests in flight,
before uvicorn ends the process (see README, "Stopping a producer").
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api import dashboards, errors
from api.body_limit import BodyLimit
from api.nul_guard import NulGuard
from api.routers import analytics, customers, events, invoices, ops

TITLE = "Meterline"
VERSION = "1"


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    from tasks.runtime import start
    from tasks.shutdown import flush_recorders_async

    if app.state.start_broker:
        start()
    yield
    await flush_recorders_async()


def create_app(*, start_broker: bool = True) -> FastAPI:
    """The HTTP API. `start_broker=False` leaves the process's broker as it is (tests that
    installed one; generating the OpenAPI document)."""
    from storage.settings import get_settings

    app = FastAPI(
        title=TITLE,
        version=VERSION,
        summary="Usage metering and billing: send usage, read usage, limits and invoices.",
        lifespan=_lifespan,
    )
    app.state.start_broker = start_broker
    errors.install(app)
    for module in (events, customers, invoices, ops, analytics):
        app.include_router(module.router)
    app.include_router(dashboards.router)
    app.add_middleware(NulGuard)
    app.add_middleware(BodyLimit, max_bytes=get_settings().METER_API_MAX_BODY_BYTES)
    return app


def openapi_document() -> dict[str, object]:
    """The OpenAPI document, as committed in `api/openapi.json`."""
    return create_app(start_broker=False).openapi()
