"""The app factory: `create_app(settings)` -> FastAPI, with a pool opened by the lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse

from api import docs_pages, errors, params
from api.deadline import DeadlineMiddleware
from api.deps import CallerDep
from api.jsonbody import JsonRoute
from api.middleware import BodyLimitMiddleware, RequestIdMiddleware
from api.pool import POOL_MAX_SIZE, POOL_MIN_SIZE, ApiPool
from api.routers import (
    alarms,
    devices,
    health,
    labels,
    metrics,
    rejects,
    sites,
    telemetry,
    tokens,
)
from api.routers import notifications as notification_routes
from api.state import AppState
from api.stream import AlarmHub
from api.tasks import Supervisor
from firesafe import logs
from firesafe.embedded import SUPERVISOR_PID_VARIABLE, exit_with_parent
from firesafe.settings import Settings

log = logging.getLogger(__name__)

# Start-up waits this long for the alarm LISTEN connection before serving anyway.
LISTEN_READY_TIMEOUT_S = 5.0
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
        api_pool = ApiPool(conninfo)
        pool = api_pool.pool
        await api_pool.open()
        # The listener back after losing the server: the pool's idle
        # connections went with it.
        hub = AlarmHub(conninfo, logger=app_log, on_reconnect=api_pool.sweep)
        supervisor = Supervisor(logger=app_log)
        supervisor.add("alarm-listener", hub.run)
        supervisor.add("token-watcher", lambda: hub.watch_tokens(pool))
        background = asyncio.create_task(supervisor.run(), name="firesafe-api-background")
        # Serve once live streams work (or, the database being slow, degraded).
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(hub.listening.wait(), LISTEN_READY_TIMEOUT_S)
        app.state.firesafe = AppState(
            pool=pool,
            hub=hub,
            admin_token=admin_token,
            heartbeat_s=heartbeat_s,
            tasks=supervisor,
        )
        app_log.info("API ready (pool %d-%d connections)", POOL_MIN_SIZE, POOL_MAX_SIZE)
        try:
            yield
        finally:
            background.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await background
            await api_pool.close()
            app_log.info("API stopped")

    public_docs = settings.api_public_docs
    app = FastAPI(
        title="firesafe",
        version="1",
        summary="Fire-safety IoT monitoring: devices, alarms, telemetry, rejects",
        lifespan=lifespan,
        # Contract: every endpoint but /health needs a token, the schema included.
        # FIRESAFE_API_PUBLIC_DOCS=true serves /openapi.json, /docs, /redoc openly
        # (the two pages from local assets: docs_pages).
        openapi_url="/openapi.json" if public_docs else None,
        docs_url=None,
        redoc_url=None,
        dependencies=[Depends(params.single_valued_query)],
    )
    # Its own routes too (the routers' say so themselves): JSON bodies by api.jsonbody.
    app.router.route_class = JsonRoute
    # Innermost: no response within its deadline (a hung database) is a 503.
    app.add_middleware(DeadlineMiddleware)
    errors.install(app)
    docs_pages.install(app, public_docs=public_docs)
    # Outermost last: every request gets an id, then bodies are bounded,
    # both before routing and authentication.
    app.add_middleware(BodyLimitMiddleware)
    app.add_middleware(RequestIdMiddleware)
    for router in (
        health.router,
        metrics.router,
        devices.router,
        telemetry.router,
        alarms.router,
        rejects.router,
        tokens.router,
        sites.router,
        labels.router,
        notification_routes.router,
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

    if not public_docs:

        @app.get("/openapi.json", include_in_schema=False)
        async def private_openapi(caller: CallerDep) -> JSONResponse:
            return JSONResponse(app.openapi())

    return app


def create_app_from_environment() -> FastAPI:
    """The app of one worker of `firesafe api --workers N` (settings from FIRESAFE_*).
    A worker is a process of its own: its log lines get the format of the others,
    and it ends with its supervisor (a SIGKILLed `firesafe api` left its workers
    serving the port, and the next one found it taken)."""
    supervisor = os.environ.get(SUPERVISOR_PID_VARIABLE)
    if supervisor is not None:
        exit_with_parent(int(supervisor))
    settings = Settings()
    logs.configure(settings.log_level)
    return create_app(settings)
