"""The app factory: `create_app(settings)` -> FastAPI, with a pool opened by the lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from psycopg import AsyncConnection
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool

from api import docs_pages, errors
from api.routers import alarms, devices, health, metrics, rejects, sites, telemetry, tokens
from api.state import AppState
from api.stream import AlarmHub
from firesafe.settings import Settings

log = logging.getLogger(__name__)

# A handful of connections serve hundreds of requests per second (each holds
# one for a few ms); SSE clients hold none between events.
POOL_MIN_SIZE = 2
POOL_MAX_SIZE = 16
# Start-up fails clearly if the database is not there within this time.
POOL_OPEN_TIMEOUT_S = 30.0
# Idle SSE streams send a comment this often, so proxies keep them open.
HEARTBEAT_S = 15.0


def create_app(
    settings: Settings,
    *,
    heartbeat_s: float = HEARTBEAT_S,
    logger: logging.Logger | None = None,
) -> FastAPI:
    """The REST API of contract section 4, ready for uvicorn."""
    conninfo = settings.require_database_url()
    admin_token = settings.admin_token.get_secret_value() if settings.admin_token else None
    app_log = logger or log

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool: AsyncConnectionPool[AsyncConnection[DictRow]] = AsyncConnectionPool(
            conninfo,
            open=False,
            min_size=POOL_MIN_SIZE,
            max_size=POOL_MAX_SIZE,
            connection_class=AsyncConnection[DictRow],
            kwargs={"autocommit": True, "row_factory": dict_row},
            check=AsyncConnectionPool.check_connection,
            name="firesafe-api",
        )
        await pool.open(wait=True, timeout=POOL_OPEN_TIMEOUT_S)
        hub = AlarmHub(conninfo, logger=app_log)
        listener = asyncio.create_task(hub.run(), name="firesafe-api-alarm-listener")
        app.state.firesafe = AppState(
            pool=pool, hub=hub, admin_token=admin_token, heartbeat_s=heartbeat_s
        )
        app_log.info("API ready (pool %d-%d connections)", POOL_MIN_SIZE, POOL_MAX_SIZE)
        try:
            yield
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener
            await pool.close()
            app_log.info("API stopped")

    app = FastAPI(
        title="firesafe",
        version="1",
        summary="Fire-safety IoT monitoring: devices, alarms, telemetry, rejects",
        lifespan=lifespan,
        docs_url=None,  # served by docs_pages from local assets
        redoc_url=None,
    )
    errors.install(app)
    docs_pages.install(app)
    for router in (
        health.router,
        metrics.router,
        devices.router,
        telemetry.router,
        alarms.router,
        rejects.router,
        tokens.router,
        sites.router,
    ):
        app.include_router(router)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, summary=app.summary, routes=app.routes
            )
            # The devices body is parsed by hand (JSON or CSV): add its schemas.
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for name, definition in devices.body_components().items():
                components.setdefault(name, definition)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
