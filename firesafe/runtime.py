"""Process wiring: the long-running commands, and `up` with its embedded services.

Shutdown order for `up` (uvicorn's and the design card's): stop intake (the
simulator, then ingest's MQTT reads), drain and acknowledge in-flight
batches, stop the API, then the embedded broker and database.

While it runs, `up` restarts an embedded broker or database that exits (same
port, same state); the others reconnect by themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import json
import logging
import os
import secrets
import socket
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import psycopg
import uvicorn
from psycopg.rows import dict_row

from api.http_protocol import HeadDeadlineProtocol
from firesafe.embedded import (
    SUPERVISOR_PID_VARIABLE,
    EmbeddedBroker,
    EmbeddedPostgres,
    EmbeddedServiceError,
    describe_exit,
    die_with_parent,
    free_port,
)
from firesafe.settings import Settings, parse_listen
from storage.liveness import cancel_hung
from storage.migrate import MigrationReport, migrate

if TYPE_CHECKING:
    from ingest.service import IngestService

log = logging.getLogger(__name__)

CHILD_STOP_TIMEOUT_S = 10.0
ALARM_FEED_REST_S = 5.0  # the feed's last lines at a stop: a few rows, or a database away
NOTIFY_STOP_GRACE_S = 3.0  # a notifier's delivery under way, at a stop
# `up --sim` with no simulator arguments: a small estate in real time for an
# hour, opening with the demo (within 3 minutes: an offline device, a
# suppressed nuisance, a confirmed fire with its evacuation linkage, an
# electrical alarm), then one of every scenario at random.
DEFAULT_SIM_ARGS = (
    "--sites",
    "2",
    "--devices-per-site",
    "40",
    "--scenario",
    "all",
    "--duration",
    "3600",
    "--demo",
)


def sim_command_args(extra: Sequence[str]) -> list[str]:
    """`up --sim`'s simulator arguments: the demo's, then the user's `--sim-arg`s
    (a later option wins; scenarios named there replace the demo's `all`)."""
    base = list(DEFAULT_SIM_ARGS)
    if any(a == "--scenario" or a.startswith("--scenario=") for a in extra):
        at = base.index("--scenario")
        del base[at : at + 2]
    return [*base, *extra]


API_START_TIMEOUT_S = 60.0
# Files `up` keeps under FIRESAFE_DATA_DIR so that a restart looks like the last run.
TOKEN_FILE = "admin_token"  # the generated admin token, mode 0600
STATE_FILE = "up.json"  # the embedded broker's and database's last ports
TOKEN_FILE_MODE = 0o600
LOCK_FILE = "up.lock"  # held by the one `up` using the data directory (its pid inside)
# A previous `up` may still be stopping its embedded database when the next
# starts (Ctrl-C, then `make up` again): it gets this long to finish.
LOCK_WAIT_S = 10.0
# The API is announced once ingest holds its broker session (see
# `_wait_subscribed`); a broker still away after this is said, not waited for.
SUBSCRIBE_WAIT_S = 30.0
# How often the console's alarm feed looks for linkage commands (they are written
# just after the alarm they follow, without a notification of their own).
ALARM_FEED_POLL_S = 1.0
ALARM_FEED_RETRY_S = 5.0
ALARM_CHANNEL = "firesafe_alarms"  # storage/migrations/0001_core.sql
# `firesafe api` before the database is up: retry from 1 s, doubling up to 15 s.
DB_WAIT_MIN_S = 1.0
DB_WAIT_MAX_S = 15.0
GB26875_PORT = 9026  # the gateway's port under `up` when free
# An embedded service that exits is restarted after 1 s, then 2, 4, 8 s; the
# fifth exit within a minute is a fault a restart will not mend: `up` stops.
RESTART_LIMIT = 5
RESTART_WINDOW_S = 60.0
RESTART_MIN_S = 1.0
RESTART_MAX_S = 15.0
SUPERVISE_POLL_S = 0.2


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
    # No URL: the embedded database `up` keeps under the data directory. Said
    # plainly, so that nobody takes it for the production database.
    where = (settings.data_dir / "pg").resolve()
    log.warning(
        "no FIRESAFE_DATABASE_URL: migrating the embedded database under %s (the one "
        "`firesafe up` uses), not a server of yours",
        where,
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


async def run_notify(settings: Settings, stop: asyncio.Event) -> int:
    from notify.service import Notifier

    notifier = Notifier(
        settings.require_database_url(), smtp=settings.smtp, smtp_from=settings.smtp_from
    )
    running = asyncio.ensure_future(notifier.run(stop))
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait([running, stopping], return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    # A delivery under way finishes; one waiting on a database that does not
    # answer is cut (its claim lapses with the session: delivered again).
    await asyncio.wait([running], timeout=NOTIFY_STOP_GRACE_S)
    if not running.done():
        log.warning("notifier: still waiting on the database; stopping without it")
        await cancel_hung([running])
        return 0
    running.result()  # (its error, if it failed)
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
        http=HeadDeadlineProtocol,
        log_level="warning",
        access_log=False,
        lifespan="on",
    )
    return _Server(config)


async def wait_for_database(conninfo: str, stop: asyncio.Event) -> bool:
    """Until the database answers: one line when it does not, then quiet retries
    with backoff. False when stopped first."""
    delay = DB_WAIT_MIN_S
    said = False
    while not stop.is_set():
        try:
            conn = await psycopg.AsyncConnection.connect(conninfo, connect_timeout=5)
        except psycopg.OperationalError as exc:
            if not said:
                # libpq's last line is a tab-indented hint ("Is the server
                # running...?"); the cause is the last line that says "failed".
                lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
                failed = [line for line in lines if "failed" in line]
                reason = (failed or lines or [type(exc).__name__])[-1]
                print(
                    f"firesafe: database unreachable ({reason}); waiting for it, "
                    "the API starts as soon as it answers",
                    file=sys.stderr,
                    flush=True,
                )
                said = True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            delay = min(delay * 2, DB_WAIT_MAX_S)
            continue
        await conn.close()
        if said:
            print("firesafe: database is back; starting the API", file=sys.stderr, flush=True)
        return True
    return False


async def run_api(settings: Settings, stop: asyncio.Event) -> int:
    if not await wait_for_database(settings.require_database_url(), stop):
        return 0
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
    os.environ[SUPERVISOR_PID_VARIABLE] = str(os.getpid())  # the workers end with it
    uvicorn.run(
        "api.app:create_app_from_environment",
        factory=True,
        host=settings.api_host,
        port=settings.api_port,
        http=HeadDeadlineProtocol,
        workers=workers,
        log_level="warning",
        access_log=False,
        lifespan="on",
    )
    return 0


class ExitedDuringStartup(EmbeddedServiceError):
    """A child process ended before it listened on its port."""


async def _wait_listening(proc: subprocess.Popen[bytes], port: int, name: str) -> None:
    deadline = asyncio.get_running_loop().time() + API_START_TIMEOUT_S
    while True:
        if proc.poll() is not None:
            raise ExitedDuringStartup(
                f"the {name} exited during start-up with code {proc.returncode}"
            )
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            if asyncio.get_running_loop().time() > deadline:
                raise EmbeddedServiceError(f"the {name} did not listen on port {port}") from None
            await asyncio.sleep(0.1)


def load_up_state(data_dir: Path) -> dict[str, int]:
    """The ports of the last `up` (empty when there was none, or the file is bad)."""
    try:
        state = json.loads((data_dir / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(state, dict):
        return {}
    return {k: v for k, v in state.items() if isinstance(v, int) and 0 < v < 65536}


def save_up_state(data_dir: Path, state: dict[str, int]) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    tmp = data_dir / (STATE_FILE + ".tmp")
    tmp.write_text(json.dumps(state), encoding="utf-8")
    tmp.replace(data_dir / STATE_FILE)


def kept_admin_token(data_dir: Path) -> tuple[str, bool]:
    """The admin token `up` generated earlier, or a new one written 0600 under
    `data_dir`; the flag says whether it is new."""
    path = data_dir / TOKEN_FILE
    with contextlib.suppress(FileNotFoundError):
        token = path.read_text(encoding="utf-8").strip()
        if token:
            return token, False
    data_dir.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, TOKEN_FILE_MODE)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(token + "\n")
    return token, True


def hold_data_dir(data_dir: Path, wait_s: float = LOCK_WAIT_S) -> int:
    """One `up` per data directory: an exclusive lock on LOCK_FILE for the
    process's life (the kernel drops it on any exit, SIGKILL included), so two
    `up`s never start one embedded database twice. Returns the lock's fd."""
    data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, TOKEN_FILE_MODE)
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() >= deadline:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
                os.close(fd)
                raise EmbeddedServiceError(
                    f"another `firesafe up` (pid {holder}) is using {data_dir}: stop it "
                    "first, or give this one its own FIRESAFE_DATA_DIR"
                ) from None
            time.sleep(0.1)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def check_api_port(settings: Settings) -> None:
    """Before anything starts or is printed: the API's address must be one of
    this machine's and its port free."""
    host, port = settings.api_host or "0.0.0.0", settings.api_port or 0
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise EmbeddedServiceError(
            f"FIRESAFE_API_HOST (or --api-host) {host!r} is not an address ({exc.strerror})"
        ) from None
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds
        try:
            sock.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise EmbeddedServiceError(
                    f"port {port} on {host} is already in use: stop what holds it, or "
                    "choose another with FIRESAFE_API_PORT (or --api-port)"
                ) from None
            raise EmbeddedServiceError(
                f"cannot listen on {host}:{port} ({exc.strerror}): FIRESAFE_API_HOST (or "
                "--api-host) must be an address of this machine, or 0.0.0.0 for all"
            ) from None


async def run_up(
    settings: Settings, stop: asyncio.Event, *, sim: bool, sim_args: Sequence[str]
) -> int:
    """Broker and database (embedded when not configured), migrations, ingest in this
    process, the API in a child process (its own core: ingest load never slows it),
    and the simulator when asked. Returns non-zero when the API dies."""
    from ingest.service import IngestService

    # The data directory first: a second `up` of the same checkout is told who
    # runs it, and one started while the first is stopping waits for it.
    lock = await asyncio.to_thread(hold_data_dir, settings.data_dir)
    try:
        check_api_port(settings)
    except BaseException:
        os.close(lock)
        raise
    broker: EmbeddedBroker | None = None
    pg: EmbeddedPostgres | None = None
    children: list[Child] = []
    gave_up: list[str] = []  # why a supervised service was given up on
    try:
        state = load_up_state(settings.data_dir)
        overrides: dict[str, Any] = {}
        if not settings.database_url:
            pg = EmbeddedPostgres(settings.data_dir / "pg", port=state.get("database_port"))
            overrides["database_url"] = await asyncio.to_thread(pg.start)
            state["database_port"] = pg.port or 0
            log.info("embedded PostgreSQL under %s", settings.data_dir / "pg")
        if not settings.mqtt_url:
            broker = EmbeddedBroker(
                settings.data_dir / "mqtt", preferred_port=state.get("mqtt_port")
            )
            overrides["mqtt_url"] = await asyncio.to_thread(broker.start)
            state["mqtt_port"] = broker.port or 0
        if pg is not None or broker is not None:
            save_up_state(settings.data_dir, state)
        token_is_ours = settings.admin_token is None
        if token_is_ours:
            overrides["admin_token"], _ = kept_admin_token(settings.data_dir)
        if settings.api_port == 0:
            overrides["api_port"] = free_port(settings.api_host or "127.0.0.1")
        settings = settings.with_overrides(**overrides)
        announce("mqtt", settings.mqtt.url())
        if pg is not None:
            # For a local Grafana or psql (README: "Grafana against `make up`").
            announce("database", settings.require_database_url())
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
        code = 0
        # Every alarm from here on is printed, however long the children take to start.
        shown = await alarm_feed_position(settings.require_database_url())
        async with asyncio.TaskGroup() as tasks:
            # Only what `up` started itself: a configured broker or database is
            # someone else's to run, and ours reconnect to it on their own.
            for service in (s for s in (pg, broker) if s is not None):
                tasks.create_task(supervise(service, stop, gave_up), name="supervise")
            feed = tasks.create_task(
                alarm_feed(settings.require_database_url(), shown), name="alarm-feed"
            )
            ingest_task = tasks.create_task(ingest.run(), name="ingest")
            # One worker: a laptop stack (`firesafe api --workers N` scales a real one).
            api_child = Child(
                "API",
                lambda: _start_child(
                    settings, "api", ["--workers", str(settings.api_workers or 1)]
                ),
            )
            children.append(api_child)
            api = api_child.proc
            assert api is not None
            api_died = asyncio.Event()
            # Watchers of the children; the API's first (it is cancelled first).
            supervisors: list[asyncio.Task[None]] = []

            async def start_the_rest() -> None:
                await _wait_listening(api, settings.api_port, "API")
                await _wait_subscribed(ingest)
                shown = "127.0.0.1" if settings.api_host in ("0.0.0.0", "") else settings.api_host
                api_url = f"http://{shown}:{settings.api_port}"
                announce("api", api_url)
                if token_is_ours and settings.admin_token is not None:
                    announce("admin_token", settings.admin_token.get_secret_value())
                # The GB/T 26875.3 gateway: its own process (its own core, like the API).
                listen = _gb26875_listen(settings)
                gateway = Child(
                    "GB/T 26875 gateway",
                    lambda: _start_child(
                        settings, "gateway", ["gb26875", "--listen", listen], api_url=api_url
                    ),
                )
                children.append(gateway)
                # It prints `firesafe: gb26875=tcp://HOST:PORT` itself once it listens.
                assert gateway.proc is not None
                try:
                    await _wait_listening(gateway.proc, parse_listen(listen)[1], gateway.name)
                except ExitedDuringStartup as exc:
                    # Its supervisor (below) says so and starts it again, as after
                    # any exit: five within a minute stop `up`.
                    log.warning("%s", exc)
                supervisors.append(
                    tasks.create_task(_watch_child(api, api_died, stop), name="api-watch")
                )
                notifier = Child("notifier", lambda: _start_child(settings, "notify", []))
                children.append(notifier)
                # Alarms must go on reaching people and panels: both come back when they die.
                supervisors.extend(
                    tasks.create_task(supervise(child, stop, gave_up), name=f"{child.name}-watch")
                    for child in (gateway, notifier)
                )
                if sim:
                    args = sim_command_args(sim_args)
                    if not any(a.startswith("--progress") for a in args):
                        # Its stderr is shared with ingest, the API and the alarm lines.
                        args.append("--progress=lines")
                    simulator = Child(
                        "simulator", lambda: _start_child(settings, "sim", args, api_url=api_url)
                    )
                    children.append(simulator)
                    assert simulator.proc is not None
                    # A demo tool: it may finish (--duration); it is not restarted.
                    supervisors.append(
                        tasks.create_task(
                            _report_exit("simulator", simulator.proc, stop), name="sim-watch"
                        )
                    )

            # Ctrl-C during start-up (a broker that cannot be reached makes it
            # wait) stops at once, whatever step it is in.
            if await unless_stopped(start_the_rest(), stop):
                await stop.wait()
            if api_died.is_set():
                print(
                    f"firesafe: the API exited ({describe_exit(api.returncode or 0)}); stopping",
                    file=sys.stderr,
                    flush=True,
                )
                code = 1
            for reason in gave_up:
                print(f"firesafe: {reason}; stopping", file=sys.stderr, flush=True)
                code = 1
            log.info("stopping: %singest (drain), API, services", "simulator, " if sim else "")
            for supervisor in supervisors:
                supervisor.cancel()
            # The simulator, notifier and gateway side by side, off the loop ingest
            # runs on (one after the other, a notifier waiting on a frozen database
            # held the stop 10 s: an outside check); ingest drains next, the API last.
            await asyncio.gather(
                *(asyncio.to_thread(c.stop) for c in reversed(children) if c is not api_child)
            )
            ingest.request_stop()
            if gave_up:
                # A batch waits for its database for ever; its messages stay
                # unacknowledged in the broker's session, for the next start.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(ingest_task, CHILD_STOP_TIMEOUT_S)
            else:
                await ingest_task
            # (After the drain: what it committed is printed below. Cancelled as a
            # hung query, or psycopg would ask a frozen server to cancel for 10 s.)
            await cancel_hung([feed])
            if not gave_up:
                await alarm_feed_rest(settings.require_database_url(), shown)
            _stop_process(api)
        return code
    finally:
        for child in children:
            child.stop()
        if broker is not None:
            await asyncio.to_thread(broker.stop)
        if pg is not None:
            await asyncio.to_thread(pg.stop)
        services = (("the broker", broker), ("the database", pg))
        own = [name for name, service in services if service is not None]
        log.info("stopped: %s", ", ".join(["ingest", "the API", *own]))  # said, not guessed
        os.close(lock)  # last: the next `up` may start its database now


async def unless_stopped(step: Coroutine[Any, Any, None], stop: asyncio.Event) -> bool:
    """Run `step` unless `stop` is set first (then it is cancelled): True when
    it finished. Its exception, if any, is raised."""
    task = asyncio.ensure_future(step)
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
    if task.done():
        task.result()
        return True
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return False


async def _wait_subscribed(ingest: IngestService, wait_s: float = SUBSCRIBE_WAIT_S) -> None:
    """Devices are registered through the API, so it is announced only once
    ingest holds its broker session: on a first start (no session yet) the
    broker drops what is published before it exists."""
    deadline = time.monotonic() + wait_s
    while not ingest.subscribed:
        if time.monotonic() >= deadline:
            log.warning(
                "ingest holds no broker session yet: on a first start, messages published "
                "before it subscribes are dropped by the broker"
            )
            return
        await asyncio.sleep(0.05)


async def _watch_child(
    proc: subprocess.Popen[bytes], died: asyncio.Event, stop: asyncio.Event
) -> None:
    """`up` without its API is no use: its death stops everything."""
    await asyncio.to_thread(proc.wait)
    died.set()
    stop.set()


async def _report_exit(name: str, proc: subprocess.Popen[bytes], stop: asyncio.Event) -> None:
    """A child `up` can run without says so when it ends on its own (and is reaped)."""
    await asyncio.to_thread(proc.wait)
    if stop.is_set():
        return
    if proc.returncode == 0:
        log.info("the %s finished", name)
    else:
        log.error(
            "the %s exited (%s); the rest keeps running", name, describe_exit(proc.returncode)
        )


class Supervised(Protocol):
    """A service `up` started and restarts: EmbeddedBroker, EmbeddedPostgres, or
    a child process (the notifier, the GB/T 26875 gateway)."""

    port: int | None
    proc: subprocess.Popen[bytes] | None

    @property
    def name(self) -> str: ...

    @property
    def log_path(self) -> Path | None: ...

    def restart(self) -> str: ...


class Child:
    """A `firesafe <command>` child of `up`. Its output is `up`'s own (no log
    file); `restart` starts it again with the same arguments."""

    port: int | None = None

    def __init__(self, name: str, start: Callable[[], subprocess.Popen[bytes]]) -> None:
        self.name = name
        self.log_path: Path | None = None
        self._start = start
        self.proc: subprocess.Popen[bytes] | None = start()

    def restart(self) -> str:
        self.proc = self._start()
        return ""

    def stop(self) -> None:
        if self.proc is not None:
            _stop_process(self.proc)


async def supervise(service: Supervised, stop: asyncio.Event, gave_up: list[str]) -> None:
    """Restart `service` whenever it exits before `stop`: on its port, with its
    state directory, after a growing pause. Too many exits in a row set `stop`
    with the reason in `gave_up`. Polling reaps the exited process."""
    exits: deque[float] = deque()
    while True:
        proc = service.proc
        while proc is not None and proc.poll() is None and not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), SUPERVISE_POLL_S)
        if stop.is_set():
            return  # stopping: `up` stops it itself, in order
        now = time.monotonic()
        exits.append(now)
        while exits[0] < now - RESTART_WINDOW_S:
            exits.popleft()
        delay = min(RESTART_MAX_S, RESTART_MIN_S * 2 ** (len(exits) - 1))
        give_up = len(exits) >= RESTART_LIMIT
        if proc is not None:
            log.error(
                "the %s (pid %d) exited unexpectedly (%s); %s",
                service.name,
                proc.pid,
                describe_exit(proc.returncode),
                "not restarting it again"
                if give_up
                else f"restarting it{_on_port(service.port)} in {delay:.0f} s",
            )
        if give_up:
            see = f" (see {service.log_path})" if service.log_path else ""
            gave_up.append(
                f"the {service.name} exited {len(exits)} times within {RESTART_WINDOW_S:.0f} s{see}"
            )
            stop.set()
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)
        if stop.is_set():
            return
        try:
            # Not cancelled half way: `stop` is only looked at between steps.
            await asyncio.to_thread(service.restart)
        except EmbeddedServiceError as exc:
            log.error("the %s could not be restarted: %s", service.name, exc)
            continue  # counts as one more exit
        if isinstance(service, Child) and service.proc is not None:
            # Started; it says itself when it serves (a gateway: "listening on").
            log.warning("the %s was started again (pid %d)", service.name, service.proc.pid)
        else:  # (the embedded broker and database are back once they answer)
            log.warning("the %s is back%s", service.name, _on_port(service.port))


def _on_port(port: int | None) -> str:
    return f" on port {port}" if port else ""


def format_alarm_line(row: dict[str, Any]) -> str:
    """One console line per alarm transition: time, site, zone, device, type, verdict, reason."""
    at: datetime = row["at"]
    # A site or gateway alarm (site_silent) has no device and no zone.
    zone = "/".join(str(row[k]) for k in ("building", "floor", "zone") if row[k]) or "-"
    actor = "" if row["actor"] == "system" else f" by {row['actor']}"
    return (
        f"alarm {at:%H:%M:%S} {row['action']:<12} site={row['site_id']} zone={zone} "
        f"device={row['device_id'] or '-'} type={row['type']} verdict={row['verdict']} "
        f"reason={row['reason']}{actor}"
    )


def format_linkage_line(row: dict[str, Any]) -> str:
    at: datetime = row["at"]
    return (
        f"alarm {at:%H:%M:%S} {'linkage':<12} site={row['site_id']} "
        f"building={row['building']} {row['summary']} alarm={row['alarm_id'] or '-'}"
    )


_ALARM_LOG_SQL = """
    SELECT l.id, l.at, l.action, l.actor, a.site_id, a.building, a.floor, a.zone,
           a.device_id, a.type, a.verdict, a.reason
    FROM alarm_log l JOIN alarms a ON a.id = l.alarm_id
    WHERE l.id > %s ORDER BY l.id
"""
# Linkage commands grouped per alarm and building, e.g. "3 evac: emergency left 2, off 1".
_LINKAGE_SQL = """
    SELECT max(id) AS id, min(at) AS at, alarm_id, site_id, building,
           count(*)::text || ' evac: ' || string_agg(DISTINCT cmd, ',') || ' '
             || coalesce(string_agg(DISTINCT direction, ','), '') AS summary
    FROM linkage_commands WHERE id > %s
    GROUP BY alarm_id, site_id, building ORDER BY max(id)
"""


@dataclass
class FeedPosition:
    """The newest alarm_log and linkage_commands ids shown (or not to show)."""

    log: int
    linkage: int


async def alarm_feed_position(conninfo: str) -> FeedPosition:
    """The newest alarm_log and linkage_commands ids: what the feed need not show."""
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
        row = await (
            await conn.execute(
                "SELECT (SELECT coalesce(max(id), 0) FROM alarm_log), "
                "(SELECT coalesce(max(id), 0) FROM linkage_commands)"
            )
        ).fetchone()
    assert row is not None
    return FeedPosition(int(row[0]), int(row[1]))


async def _print_new(conn: psycopg.AsyncConnection[Any], shown: FeedPosition) -> None:
    """The alarm transitions and linkage committed after `shown`, one line each;
    `shown` moves on with every line printed (a cancel between two lines
    neither repeats nor skips one)."""
    for r in await (await conn.execute(_ALARM_LOG_SQL, (shown.log,))).fetchall():
        print(format_alarm_line(r), flush=True)
        shown.log = int(r["id"])
    for r in await (await conn.execute(_LINKAGE_SQL, (shown.linkage,))).fetchall():
        print(format_linkage_line(r), flush=True)
        shown.linkage = max(shown.linkage, int(r["id"]))


async def alarm_feed(conninfo: str, shown: FeedPosition) -> None:
    """Print every alarm transition (and the linkage it caused) after `shown`
    as it is committed: LISTEN on the alarm_log channel, then read the rows after
    the last one shown."""
    while True:
        try:
            async with await psycopg.AsyncConnection.connect(
                conninfo, autocommit=True, row_factory=dict_row
            ) as conn:
                await conn.execute(f"LISTEN {ALARM_CHANNEL}")
                while True:
                    await _print_new(conn, shown)
                    # Wake on a notification, or after a while for linkage commands.
                    async for _ in conn.notifies(timeout=ALARM_FEED_POLL_S, stop_after=1):
                        pass
        except psycopg.Error as exc:
            log.warning("alarm feed: %s; retrying in %.0f s", exc, ALARM_FEED_RETRY_S)
            await asyncio.sleep(ALARM_FEED_RETRY_S)


async def alarm_feed_rest(conninfo: str, shown: FeedPosition) -> None:
    """The feed's last lines: what ingest committed while it stopped (it drains
    its batches and the alarms held for zone order). The next start shows only
    what comes after it, so they would never be printed."""
    try:
        async with asyncio.timeout(ALARM_FEED_REST_S):
            async with await psycopg.AsyncConnection.connect(
                conninfo, autocommit=True, row_factory=dict_row
            ) as conn:
                await _print_new(conn, shown)
    except (psycopg.Error, TimeoutError) as exc:
        log.warning("alarm feed: the last lines could not be read: %s", exc)


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
    # -P: the working directory is not put on the import path (an `api.py` or
    # `firesafe.py` where `up` was started must not shadow the package).
    cmd = [sys.executable, "-P", "-m", "firesafe.cli", command, *args]
    log.info("starting: firesafe %s", " ".join([command, *args]))
    # Its own process group: Ctrl-C reaches only `up`, which stops the children
    # in order (simulator, then ingest drains, then the API) instead of all at once;
    # should `up` be killed outright, they are sent SIGTERM.
    return subprocess.Popen(
        cmd,
        env=env,
        stdin=subprocess.DEVNULL,
        process_group=0,
        preexec_fn=die_with_parent(),
    )


def _stop_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(CHILD_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
