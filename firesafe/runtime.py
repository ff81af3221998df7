"""Process wiring: the long-running commands, and `up` with its embedded services.

Shutdown order for `up` (uvicorn's and the design card's): stop intake (the
simulator, then ingest's MQTT reads), drain and acknowledge in-flight
batches, stop the API, then the embedded broker and database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator, Sequence
from typing import Any

import uvicorn

from firesafe.embedded import EmbeddedBroker, EmbeddedPostgres
from firesafe.settings import Settings
from storage.migrate import MigrationReport, migrate

log = logging.getLogger(__name__)

SIM_STOP_TIMEOUT_S = 5.0


def announce(key: str, value: str) -> None:
    """The lines `firesafe up` prints for people and scripts (contract section 5)."""
    print(f"firesafe: {key}={value}", flush=True)


def migrate_database(settings: Settings) -> MigrationReport:
    if settings.database_url:
        return migrate(settings.database_url, retention_days=settings.retention_days)
    pg = EmbeddedPostgres(settings.data_dir / "pg")
    try:
        return migrate(pg.start(), retention_days=settings.retention_days)
    finally:
        pg.stop()


async def run_ingest(settings: Settings, stop: asyncio.Event) -> int:
    from ingest.service import IngestService

    service = IngestService(settings)
    async with asyncio.TaskGroup() as tasks:
        task = tasks.create_task(service.run(), name="ingest")
        stopper = tasks.create_task(_stop_when(stop, service.request_stop), name="ingest-stop")
        await task
        stopper.cancel()
    return 0


async def _stop_when(stop: asyncio.Event, action: Any) -> None:
    await stop.wait()
    action()


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the CLI owns signals and the order."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def api_server(settings: Settings) -> _Server:
    from api.app import create_app

    config = uvicorn.Config(
        create_app(settings),
        host=settings.api_host,
        port=settings.api_port,
        log_level="warning",
        access_log=False,
        lifespan="on",
    )
    return _Server(config)


def bound_url(server: uvicorn.Server, host: str) -> str:
    port = None
    for s in getattr(server, "servers", []):
        for sock in s.sockets:
            port = sock.getsockname()[1]
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
    return f"http://{shown}:{port}"


async def run_api(settings: Settings, stop: asyncio.Event) -> int:
    server = api_server(settings)
    async with asyncio.TaskGroup() as tasks:
        serve = tasks.create_task(server.serve(), name="api")
        stopper = tasks.create_task(
            _stop_when(stop, lambda: setattr(server, "should_exit", True)), name="api-stop"
        )
        await serve
        stopper.cancel()
    return 0


async def _wait_started(server: uvicorn.Server, serve: asyncio.Task[Any]) -> None:
    while not server.started:
        if serve.done():
            serve.result()
            raise RuntimeError("the API stopped during start-up")
        await asyncio.sleep(0.05)


async def run_up(
    settings: Settings, stop: asyncio.Event, *, sim: bool, sim_args: Sequence[str]
) -> int:
    from ingest.service import IngestService

    broker: EmbeddedBroker | None = None
    pg: EmbeddedPostgres | None = None
    sim_proc: subprocess.Popen[bytes] | None = None
    try:
        overrides: dict[str, Any] = {}
        if not settings.database_url:
            pg = EmbeddedPostgres(settings.data_dir / "pg")
            overrides["database_url"] = await asyncio.to_thread(pg.start)
            log.info("embedded PostgreSQL under %s", settings.data_dir / "pg")
        if not settings.mqtt_url:
            broker = EmbeddedBroker(settings.data_dir / "mqtt")
            overrides["mqtt_url"] = await asyncio.to_thread(broker.start)
        generated = settings.admin_token is None
        if generated:
            overrides["admin_token"] = secrets.token_urlsafe(32)
        settings = settings.with_overrides(**overrides)
        announce("mqtt", settings.mqtt.url())
        report = await asyncio.to_thread(
            migrate, settings.require_database_url(), retention_days=settings.retention_days
        )
        log.info("schema at version %d (%s)", report.current, report.flavour)

        ingest = IngestService(settings)
        server = api_server(settings)
        async with asyncio.TaskGroup() as tasks:
            ingest_task = tasks.create_task(ingest.run(), name="ingest")
            serve = tasks.create_task(server.serve(), name="api")
            await _wait_started(server, serve)
            api_url = bound_url(server, settings.api_host)
            announce("api", api_url)
            if generated and settings.admin_token is not None:
                announce("admin_token", settings.admin_token.get_secret_value())
            if sim:
                sim_proc = _start_sim(settings, api_url, sim_args)
            await stop.wait()
            log.info("stopping: simulator, ingest (drain), API, services")
            if sim_proc is not None:
                _stop_process(sim_proc)
            ingest.request_stop()
            await ingest_task
            server.should_exit = True
            await serve
        return 0
    finally:
        if sim_proc is not None:
            _stop_process(sim_proc)
        if broker is not None:
            await asyncio.to_thread(broker.stop)
        if pg is not None:
            await asyncio.to_thread(pg.stop)


def _start_sim(
    settings: Settings, api_url: str, sim_args: Sequence[str]
) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env["FIRESAFE_MQTT_URL"] = settings.mqtt_url or ""
    env["FIRESAFE_API_URL"] = api_url
    if settings.admin_token is not None:
        env["FIRESAFE_ADMIN_TOKEN"] = settings.admin_token.get_secret_value()
    cmd = [sys.executable, "-m", "firesafe.cli", "sim", *sim_args]
    log.info("starting the simulator: %s", " ".join(cmd[2:]))
    return subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL)


def _stop_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(SIM_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
