"""`firesafe up` keeps its embedded broker and database running: one killed
outright is said (name, exit status), restarted on its port with its state,
and the rest of the stack finds it again."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import Publisher, wait_for
from tests.test_up import _children, _embedded_env, _ready, running_up

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(sys.platform != "linux", reason="reads /proc"),
]


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return b""


def _gone(pid: int) -> bool:
    """Exited and reaped: not even a zombie is left."""
    return not Path(f"/proc/{pid}").exists()


def _register(api: str, auth: dict[str, str], device: str, site: str) -> None:
    body = {"id": device, "site": site, "building": "B", "floor": "1", "zone": "Z"}
    r = httpx.post(f"{api}/api/v1/devices", headers=auth, json={**body, "kind": "heat"})
    assert r.status_code in (200, 201), r.text


def _publish_and_read_back(
    mqtt: str, api: str, auth: dict[str, str], device: str, site: str, temperature: float
) -> None:
    """A QoS 1 reading published now is stored and served by the API."""
    ts = int(time.time() * 1000)
    pub = Publisher(mqtt)
    pub.send(
        f"fs/v1/{site}/{device}/telemetry", {"ts": ts, "seq": 1, "v": {"temperature": temperature}}
    )
    pub.close()

    def readings() -> list[dict[str, Any]]:
        r = httpx.get(
            f"{api}/api/v1/devices/{device}/telemetry", headers=auth, params={"since": ts - 1000}
        )
        return list(r.json()["items"]) if r.status_code == 200 else []

    items = wait_for(readings, timeout=30)
    assert items[0]["v"] == {"temperature": temperature}


@pytest.mark.skipif(not shutil.which("mosquitto"), reason="amqtt keeps no sessions on disk")
def test_up_restarts_its_embedded_broker_killed_outright(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = _embedded_env(data)
    with running_up(env, tmp_path, stderr=subprocess.STDOUT) as up:
        announced_at = time.time()  # ingest held its session by then
        out = up.announced
        api, auth = out["api"], {"Authorization": f"Bearer {out['admin_token']}"}
        port = int(out["mqtt"].rsplit(":", 1)[1])
        wait_for(lambda: _ready(httpx.get(f"{api}/health").json()), timeout=30)
        _register(api, auth, "K-D1", "K")
        # Mosquitto saves its state every 5 s (and on a clean stop): killed
        # outright, it comes back with what it saved last, ingest's session
        # included once that was saved.
        saved = data / "mqtt" / "mosquitto.db"
        wait_for(lambda: saved.exists() and saved.stat().st_mtime > announced_at, timeout=10)
        # Ours: a child of this `up`, running mosquitto (or amqtt without it).
        (broker,) = [
            pid
            for pid in _children(up.proc.pid)
            if b"mosquitto" in _cmdline(pid) or b"amqtt" in _cmdline(pid)
        ]
        os.kill(broker, signal.SIGKILL)
        line = up.wait_line("exited unexpectedly", timeout=10)
        for part in (" ERROR ", "broker", "killed by SIGKILL", f"port {port}"):
            assert part in line, line
        up.wait_line(f"broker is back on port {port}", timeout=30)
        wait_for(lambda: _gone(broker), timeout=5)  # reaped, no <defunct> left
        # Published at once: ingest's persistent session, kept by the broker's
        # persistence, holds it until ingest has reconnected.
        _publish_and_read_back(out["mqtt"], api, auth, "K-D1", "K", 22.5)


def test_up_restarts_its_embedded_postgres_killed_outright(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = _embedded_env(data)
    with running_up(env, tmp_path, stderr=subprocess.STDOUT) as up:
        out = up.announced
        api, auth = out["api"], {"Authorization": f"Bearer {out['admin_token']}"}
        port = int(out["database"].rsplit(":", 1)[1].split("/")[0])
        wait_for(lambda: _ready(httpx.get(f"{api}/health").json()), timeout=30)
        _register(api, auth, "P-D1", "P")
        # The postmaster serving this test's data directory, and no other.
        postmaster = int((data / "pg" / "postmaster.pid").read_text().split()[0])
        assert str(data / "pg").encode() in _cmdline(postmaster)
        os.kill(postmaster, signal.SIGKILL)
        line = up.wait_line("exited unexpectedly", timeout=10)
        for part in (" ERROR ", "PostgreSQL", "killed by SIGKILL", f"port {port}"):
            assert part in line, line
        up.wait_line(f"PostgreSQL is back on port {port}", timeout=30)
        wait_for(lambda: _gone(postmaster), timeout=5)
        wait_for(lambda: _ready(httpx.get(f"{api}/health").json()), timeout=30)
        r = httpx.get(f"{api}/api/v1/devices/P-D1", headers=auth)
        assert r.status_code == 200, r.text  # registered before the kill
        # Ingest has its database back too.
        _publish_and_read_back(out["mqtt"], api, auth, "P-D1", "P", 23.5)


@pytest.mark.parametrize(
    ("command", "name"), [(b"notify", "notifier"), (b"gateway", "GB/T 26875 gateway")]
)
def test_up_restarts_its_notifier_and_gateway_killed_outright(
    tmp_path: Path, command: bytes, name: str
) -> None:
    """Alarms must go on reaching people (the notifier) and coming from fire
    panels (the gateway): either one killed outright is said and started again."""
    env = _embedded_env(tmp_path / "data")
    with running_up(env, tmp_path, stderr=subprocess.STDOUT) as up:
        api = up.announced["api"]
        wait_for(lambda: _ready(httpx.get(f"{api}/health").json()), timeout=30)

        def children_running() -> list[int]:
            return [
                pid
                for pid in _children(up.proc.pid)
                if f"firesafe.cli\0{command.decode()}\0".encode() in _cmdline(pid)
            ]

        (first,) = wait_for(children_running, timeout=30)
        os.kill(first, signal.SIGKILL)
        line = up.wait_line("exited unexpectedly", timeout=10)
        for part in (" ERROR ", name, "killed by SIGKILL", "restarting it in"):
            assert part in line, line
        up.wait_line(f"the {name} was started again", timeout=30)
        (second,) = wait_for(children_running, timeout=30)
        assert second != first
        wait_for(lambda: _gone(first), timeout=5)  # reaped
        assert up.proc.poll() is None  # the rest kept running
