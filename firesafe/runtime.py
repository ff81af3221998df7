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

from firesafe.embedded import EmbeddedBroker, EmbeddedPostgres, free_port
from firesafe.settings import Settings, parse_listen
from storage.migrate import MigrationReport, migrate

log = logging.getLogger(__name__)

CHILD_STOP_TIMEOUT_S = 10.0
# `up --sim` with no simulator arguments: a small estate in real time for an
# hour, with one of every scenario, so a newcomer sees alarms, suppressed
# nuisances, faults and linkage without reading the simulator's manual.
DEFAULT_SIM_ARGS = (
    "--sites",
    "2",
    "--devices-per-site",
    "40",
    "--scenario",
    "all",
    "--duration",
    "3600",
)
API_START_TIMEOUT_S = 60.0
GB26875_PORT = 9026  # the gateway's port under `up` when free


def announce(key: str, value: str) -> None:
    """The lines `firesafe up` prints for people and scripts (contract section 5)."""
    print(f"firesafe: {key}={value}", flush=True)


def migrate_database(settings: Settings) -> MigrationReport:
    if settings.database_url:
        return migrate(
            settings.database_url,
            retention_days=settings.retention_days,
            shards=settings.shards,
        )
    pg = EmbeddedPostgres(settings.data_dir / "pg")
    try:
        return migrate(
            pg.start(),
            retention_days=settings.retention_days,
            shards=settings.shards,
        )
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


async def run_gateway_gb26875(settings: Settings, stop: asyncio.Event, listen: str | None) -> int:
    from gateways.gb26875 import service as gb26875

    def ready(host: str, port: int) -> None:
        announce("gb26875", f"tcp://{host}:{port}")

    await gb26875.run(settings, stop, listen=listen, on_ready=ready)
    return 0


def _gb26875_listen(settings: Settings) -> str:
    """`up`: the configured address, else 127.0.0.1:9026, else a free port."""
    if settings.gb26875_listen:
        return settings.gb26875_listen
    import socket

    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", GB26875_PORT))
            port = GB26875_PORT
        except OSError:
            port = free_port("127.0.0.1")
    return f"127.0.0.1:{port}"


def run_api_workers(settings: Settings, workers: int) -> int:
    """The API in `workers` processes sharing one port (uvicorn's supervisor, which
    restarts a worker that dies and owns SIGINT/SIGTERM). Each worker builds the
    app from the environment, so the resolved settings are passed down there."""
    os.environ.update(settings.to_environment())
    uvicorn.run(
        "api.app:create_app_from_environment",
        factory=True,
        host=settings.api_host,
        port=settings.api_port,
        workers=workers,
        log_level="warning",
        access_log=False,
        lifespan="on",
    )
    return 0


async def _wait_api(proc: subprocess.Popen[bytes], port: int) -> None:
    deadline = asyncio.get_running_loop().time() + API_START_TIMEOUT_S
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"the API exited during start-up with code {proc.returncode}")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            if asyncio.get_running_loop().time() > deadline:
                raise RuntimeError(f"the API did not listen on port {port}") from None
            await asyncio.sleep(0.1)


async def run_up(
    settings: Settings, stop: asyncio.Event, *, sim: bool, sim_args: Sequence[str]
) -> int:
    """Broker and database (embedded when not configured), migrations, ingest in this
    process, the API in a child process (its own core: ingest load never slows it),
    and the simulator when asked."""
    from ingest.service import IngestService

    broker: EmbeddedBroker | None = None
    pg: EmbeddedPostgres | None = None
    children: list[subprocess.Popen[bytes]] = []
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
        if settings.api_port == 0:
            overrides["api_port"] = free_port(settings.api_host or "127.0.0.1")
        settings = settings.with_overrides(**overrides)
        announce("mqtt", settings.mqtt.url())
        report = await asyncio.to_thread(
            migrate,
            settings.require_database_url(),
            retention_days=settings.retention_days,
            shards=settings.shards,
        )
        log.info("schema at version %d (%s)", report.current, report.flavour)

        # One process, one session for everything: a message for a site nobody
        # registered still reaches ingest and becomes a reject.
        ingest = IngestService(settings.with_overrides(ingest_mode="single"))
        async with asyncio.TaskGroup() as tasks:
            ingest_task = tasks.create_task(ingest.run(), name="ingest")
            # One worker: a laptop stack (`firesafe api --workers N` scales a real one).
            api = _start_child(settings, "api", ["--workers", str(settings.api_workers or 1)])
            children.append(api)
            await _wait_api(api, settings.api_port)
            shown = "127.0.0.1" if settings.api_host in ("0.0.0.0", "") else settings.api_host
            api_url = f"http://{shown}:{settings.api_port}"
            announce("api", api_url)
            if generated and settings.admin_token is not None:
                announce("admin_token", settings.admin_token.get_secret_value())
            # The GB/T 26875.3 gateway: its own process (its own core, like the API).
            listen = _gb26875_listen(settings)
            gateway = _start_child(
                settings, "gateway", ["gb26875", "--listen", listen], api_url=api_url
            )
            children.append(gateway)
            # It prints `firesafe: gb26875=tcp://HOST:PORT` itself once it listens.
            await _wait_api(gateway, parse_listen(listen)[1])
            if sim:
                args = list(sim_args) or list(DEFAULT_SIM_ARGS)
                children.append(_start_child(settings, "sim", args, api_url=api_url))
            await stop.wait()
            log.info("stopping: simulator, ingest (drain), API, services")
            for child in reversed(children):  # the simulator first, the API last
                if child is not api:
                    _stop_process(child)
            ingest.request_stop()
            await ingest_task
            _stop_process(api)
        return 0
    finally:
        for child in children:
            _stop_process(child)
        if broker is not None:
            await asyncio.to_thread(broker.stop)
        if pg is not None:
            await asyncio.to_thread(pg.stop)


def _start_child(
    settings: Settings, command: str, args: Sequence[str], *, api_url: str | None = None
) -> subprocess.Popen[bytes]:
    """`firesafe <command>` as a child, configured through the environment."""
    env = dict(os.environ)
    env.update(
        FIRESAFE_MQTT_URL=settings.mqtt_url or "",
        FIRESAFE_DATABASE_URL=settings.database_url or "",
        FIRESAFE_API_HOST=settings.api_host,
        FIRESAFE_API_PORT=str(settings.api_port),
        FIRESAFE_API_URL=api_url or settings.api_url,
        FIRESAFE_LOG_LEVEL=settings.log_level,
    )
    if settings.admin_token is not None:
        env["FIRESAFE_ADMIN_TOKEN"] = settings.admin_token.get_secret_value()
    if command == "api" and settings.api_host in ("127.0.0.1", "localhost", "::1"):
        # `up` on loopback is a developer's stack: /docs open, as its README says.
        env.setdefault("FIRESAFE_API_PUBLIC_DOCS", "true")
    cmd = [sys.executable, "-m", "firesafe.cli", command, *args]
    log.info("starting: firesafe %s", " ".join([command, *args]))
    return subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL)


def _stop_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(CHILD_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
