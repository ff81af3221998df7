"""`firesafe up` from the outside: what it prints, /health, data round trip, Ctrl-C."""

from __future__ import annotations

import os
import queue
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from firesafe import runtime
from firesafe.embedded import EmbeddedServiceError, free_port
from firesafe.runtime import format_alarm_line, hold_data_dir
from tests.helpers import Publisher, forget_session, query, register, wait_for

pytestmark = pytest.mark.integration

START_TIMEOUT_S = 90.0


class Up:
    """A running `firesafe up`: what it announced, and its later stdout lines."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.announced: dict[str, str] = {}
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put("")

    def next_line(self, deadline: float) -> str:
        try:
            return self.lines.get(timeout=max(deadline - time.monotonic(), 0.01))
        except queue.Empty:
            raise AssertionError("no output from up in time") from None

    def wait_line(self, wanted: str, timeout: float = 60.0) -> str:
        """The first later stdout line containing `wanted`."""
        deadline = time.monotonic() + timeout
        while True:
            line = self.next_line(deadline)
            assert line, f"up exited with {self.proc.wait()}"
            if wanted in line:
                return line


@contextmanager
def firesafe_up(env: dict[str, str], cwd: Path) -> Iterator[dict[str, str]]:
    """Run `firesafe up`; yield the `firesafe: key=value` lines it printed."""
    with running_up(env, cwd) as up:
        yield up.announced


def start_up(
    env: dict[str, str],
    cwd: Path,
    args: tuple[str, ...] = (),
    log_level: str = "WARNING",
    stderr: int | None = None,
) -> Up:
    """`firesafe up` started as from a terminal, its stdout read line by line
    (with its log lines too when `stderr` is subprocess.STDOUT)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "firesafe.cli", "up", *args],
        env={**os.environ, "FIRESAFE_API_PORT": "0", "FIRESAFE_LOG_LEVEL": log_level, **env},
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=stderr,
        stdin=subprocess.DEVNULL,
        text=True,
        process_group=0,  # as in a terminal: Ctrl-C goes to the whole group
    )
    return Up(proc)


@contextmanager
def running_up(
    env: dict[str, str], cwd: Path, args: tuple[str, ...] = (), stderr: int | None = None
) -> Iterator[Up]:
    up = start_up(env, cwd, args, stderr=stderr)
    proc = up.proc
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        wanted = {"mqtt", "api"} | (set() if env.get("FIRESAFE_ADMIN_TOKEN") else {"admin_token"})
        while not wanted <= up.announced.keys():
            assert time.monotonic() < deadline, f"up did not announce itself: {up.announced}"
            line = up.next_line(deadline)
            assert line, f"up exited early with {proc.wait()}"
            if line.startswith("firesafe: ") and "=" in line:
                key, value = line[len("firesafe: ") :].strip().split("=", 1)
                up.announced[key] = value
        yield up
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: every process of the group gets it
        try:
            code = proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert code == 0, f"firesafe up exited with {code} after Ctrl-C"


def _ready(health: dict[str, Any]) -> bool:
    """Ingest reporting and subscribed: `ok`, or `degraded` by TimescaleDB background
    jobs alone (on PostgreSQL 15.20 with TimescaleDB 2.28.3 they all fail)."""
    if health["status"] == "ok":
        return True
    return bool(
        health["failed_jobs"]
        and health["ingest"]["state"] == "ok"
        and health["broker"]["connected"]
        and health["database"]["ok"]
        and health["alarm_stream"]["listening"]
    )


def _configured_env(db: str, mqtt_url: str, tmp_path: Path) -> dict[str, str]:
    """`up` on the suite's broker and database, with a client id of its own."""
    return {
        "FIRESAFE_MQTT_URL": mqtt_url,
        "FIRESAFE_DATABASE_URL": db,
        "FIRESAFE_MQTT_CLIENT_ID": f"test-up-{uuid.uuid4().hex[:8]}",
        "FIRESAFE_DATA_DIR": str(tmp_path / "data"),
    }


def test_up_with_configured_services_uses_only_them(db: str, mqtt_url: str, tmp_path: Path) -> None:
    env = _configured_env(db, mqtt_url, tmp_path)
    client_id = env["FIRESAFE_MQTT_CLIENT_ID"]
    site = f"U{uuid.uuid4().hex[:8]}"
    with firesafe_up(env, tmp_path) as out:
        assert out["mqtt"].endswith(mqtt_url.rsplit(":", 1)[1])  # the configured broker
        api, token = out["api"], out["admin_token"]
        auth = {"Authorization": f"Bearer {token}"}
        # Ready: database up, ingest reporting, and subscribed to the broker.
        wait_for(lambda: _ready(httpx.get(f"{api}/health").json()), timeout=30)
        health = httpx.get(f"{api}/health").json()
        assert health["broker"]["connected"] is True
        assert health["ingest"]["state"] == "ok"
        r = httpx.post(
            f"{api}/api/v1/devices",
            headers=auth,
            json={
                "id": f"{site}-D1",
                "site": site,
                "building": "B",
                "floor": "1",
                "zone": "Z",
                "kind": "heat",
            },
        )
        assert r.status_code in (200, 201), r.text
        pub = Publisher(mqtt_url)
        ts = int(time.time() * 1000)
        pub.send(
            f"fs/v1/{site}/{site}-D1/telemetry", {"ts": ts, "seq": 1, "v": {"temperature": 21.5}}
        )
        pub.send(f"fs/v1/{site}/{site}-D1/telemetry", b"not json")
        pub.close()

        def readings() -> list[dict[str, object]]:
            r = httpx.get(
                f"{api}/api/v1/devices/{site}-D1/telemetry",
                headers=auth,
                params={"since": ts - 1000},
            )
            return list(r.json()["items"]) if r.status_code == 200 else []

        items = wait_for(readings)
        assert items[0]["v"] == {"temperature": 21.5}
        assert items[0]["seq"] == 1
        rejects = httpx.get(
            f"{api}/api/v1/rejects", headers=auth, params={"reason": "invalid_json"}
        )
        assert any(
            i["topic"] == f"fs/v1/{site}/{site}-D1/telemetry" for i in rejects.json()["items"]
        )
    assert not (tmp_path / "data" / "pg").exists()  # nothing embedded was started
    assert not (tmp_path / "data" / "mqtt").exists()
    forget_session(mqtt_url, client_id)


def test_up_announces_the_api_only_once_ingest_holds_its_broker_session(
    db: str, tmp_path: Path
) -> None:
    """A first start against a broker that is not up yet: no session, so the
    broker would drop what devices publish. `api=` (where devices are
    registered) comes only once ingest is subscribed; a message sent the
    moment it appears is kept (here: as a reject of an unknown site)."""
    port = free_port()
    client_id = f"test-up-{uuid.uuid4().hex[:8]}"
    env = {
        "FIRESAFE_MQTT_URL": f"mqtt://127.0.0.1:{port}",
        "FIRESAFE_DATABASE_URL": db,
        "FIRESAFE_MQTT_CLIENT_ID": client_id,
        "FIRESAFE_DATA_DIR": str(tmp_path / "data"),
    }
    up = start_up(env, tmp_path, log_level="ERROR")
    proc = up.proc
    broker: subprocess.Popen[bytes] | None = None
    try:
        up.wait_line("firesafe: mqtt=", timeout=START_TIMEOUT_S)
        time.sleep(4.0)  # the API has long been listening by now
        early = []
        while not up.lines.empty():
            early.append(up.lines.get_nowait())
        assert not any("firesafe: api=" in line for line in early), early
        conf = tmp_path / "mosquitto.conf"
        conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n")
        broker = subprocess.Popen(["mosquitto", "-c", str(conf)], stderr=subprocess.DEVNULL)
        up.wait_line("firesafe: api=", timeout=60)
        site = f"U{uuid.uuid4().hex[:8]}"
        topic = f"fs/v1/{site}/{site}-D1/telemetry"
        pub = Publisher(f"mqtt://127.0.0.1:{port}")
        pub.send(topic, {"ts": int(time.time() * 1000), "seq": 1, "v": {"temperature": 21.0}})
        pub.close()
        wait_for(lambda: query(db, "SELECT 1 FROM rejects WHERE topic = %s", (topic,)), timeout=30)
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(30)
        if broker is not None:
            broker.terminate()
            broker.wait()


def test_up_with_nothing_configured_starts_embedded_services(tmp_path: Path) -> None:
    # A private folder above the data directory (as /root is): as root, the
    # embedded PostgreSQL's user needs to traverse it, and nothing more (the
    # newcomer check found it opened to g+rx,o+rx at every start).
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    tmp_path = private
    env = {"FIRESAFE_DATA_DIR": str(tmp_path / "data")}
    for name in ("FIRESAFE_MQTT_URL", "FIRESAFE_DATABASE_URL", "FIRESAFE_ADMIN_TOKEN"):
        env[name] = ""
    with firesafe_up(env, tmp_path) as out:
        assert out["mqtt"].startswith("mqtt://127.0.0.1:")
        api = out["api"]
        body = wait_for(lambda: httpx.get(f"{api}/health").json(), timeout=30)
        wait_for(lambda: httpx.get(f"{api}/health").status_code == 200, timeout=30)
        assert body["database"]["ok"] is True
        r = httpx.get(
            f"{api}/api/v1/devices", headers={"Authorization": f"Bearer {out['admin_token']}"}
        )
        assert r.status_code == 200
    # Its data stays for the next start.
    assert (tmp_path / "data" / "pg" / "PG_VERSION").exists()
    expected = 0o711 if os.geteuid() == 0 else 0o700
    assert stat.S_IMODE(private.stat().st_mode) == expected


def _embedded_env(data: Path) -> dict[str, str]:
    env = {"FIRESAFE_DATA_DIR": str(data)}
    for name in ("FIRESAFE_MQTT_URL", "FIRESAFE_DATABASE_URL", "FIRESAFE_ADMIN_TOKEN"):
        env[name] = ""
    return env


def test_up_restarted_keeps_data_token_ports_and_prints_alarms(tmp_path: Path) -> None:
    """`make up`, Ctrl-C, `make up`: the same data, admin token and broker port
    (the first run once made the data directory unusable for PostgreSQL)."""
    data = tmp_path / "data"
    env = _embedded_env(data)
    device = {"id": "R-MCP1", "site": "R", "building": "B1", "floor": "2", "zone": "Z7"}
    with running_up(env, tmp_path) as up:
        first = dict(up.announced)
        assert first["database"].startswith("postgresql://postgres@127.0.0.1:")
        api, auth = first["api"], {"Authorization": f"Bearer {first['admin_token']}"}
        r = httpx.post(f"{api}/api/v1/devices", headers=auth, json={**device, "kind": "mcp"})
        assert r.status_code in (200, 201), r.text
        wait_for(lambda: _ready(httpx.get(f"{api}/health").json()), timeout=30)
        pub = Publisher(first["mqtt"])
        ts = int(time.time() * 1000)
        pub.send("fs/v1/R/R-MCP1/event", {"ts": ts, "seq": 1, "type": "activated"})
        pub.close()
        # The console announces the alarm: time, site, zone, device, type, verdict, reason.
        line = up.wait_line("device=R-MCP1")
        for part in ("site=R", "zone=B1/2/Z7", "type=fire", "verdict=confirmed", "reason="):
            assert part in line, line
        # The database answers on the printed URL (what a local Grafana uses).
        assert query(first["database"], "SELECT count(*) FROM alarms")[0][0] == 1
    mode = stat.S_IMODE((data / "pg").stat().st_mode)
    assert mode in (0o700, 0o750), oct(mode)
    assert stat.S_IMODE((data / "admin_token").stat().st_mode) == 0o600

    with running_up(env, tmp_path) as up:
        again = up.announced
        assert again["admin_token"] == first["admin_token"]
        assert again["mqtt"] == first["mqtt"]
        api, auth = again["api"], {"Authorization": f"Bearer {again['admin_token']}"}
        wait_for(lambda: httpx.get(f"{api}/health").status_code == 200, timeout=30)
        alarms = httpx.get(f"{api}/api/v1/alarms", headers=auth, params={"site": "R"})
        assert alarms.status_code == 200, alarms.text
        assert [(a["device"], a["type"]) for a in alarms.json()["items"]] == [("R-MCP1", "fire")]


def test_alarms_committed_while_up_stops_are_printed(
    db: str, mqtt_url: str, tmp_path: Path
) -> None:
    """A newcomer pressed Ctrl-C while a detector's readings waited for its zone
    neighbour: ingest's drain opened their fire alarm, and no line said so,
    neither then nor at the next start (which shows only what comes after).
    The console prints what ingest committed while it stopped."""
    env = _configured_env(db, mqtt_url, tmp_path)
    client_id = env["FIRESAFE_MQTT_CLIENT_ID"]
    site = f"U{uuid.uuid4().hex[:8]}"
    smoke, neighbour = f"{site}-S1", f"{site}-S2"
    register(
        db,
        [
            {"id": d, "site": site, "building": "B", "floor": "1", "zone": "Z", "kind": "smoke"}
            for d in (smoke, neighbour)
        ],
    )
    with running_up(env, tmp_path) as up:
        wait_for(lambda: _ready(httpx.get(f"{up.announced['api']}/health").json()), timeout=30)
        pub = Publisher(mqtt_url)
        t = int(time.time() * 1000)
        # The neighbour's clock is the zone's: the smoke head's readings after it
        # wait for it (it may still be sending), up to 10 s past its last arrival.
        pub.send(f"fs/v1/{site}/{neighbour}/telemetry", {"ts": t, "seq": 1, "v": {}})
        for i, obs in enumerate((3.6, 3.9, 4.2)):
            reading = {"ts": t + 1000 * (i + 1), "seq": i + 1, "v": {"obscuration": obs}}
            pub.send(f"fs/v1/{site}/{smoke}/telemetry", reading)
        pub.close()
        stored = "SELECT count(*) FROM telemetry WHERE device_id LIKE %s"
        wait_for(lambda: query(db, stored, (f"{site}-%",))[0][0] == 4)
        assert not query(db, "SELECT 1 FROM alarms WHERE device_id = %s", (smoke,))
    rest = []
    while line := up.lines.get(timeout=5):
        rest.append(line)
    assert query(db, "SELECT 1 FROM alarms WHERE device_id = %s", (smoke,))  # the drain's
    assert [x for x in rest if f"device={smoke}" in x and "type=fire" in x], rest
    forget_session(mqtt_url, client_id)


def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


@pytest.mark.skipif(sys.platform != "linux", reason="parent-death signal is Linux's")
def test_up_killed_outright_leaves_no_child_holding_its_ports(tmp_path: Path) -> None:
    """SIGKILL of `up` (no chance to stop its children in order): the API, the
    broker, the gateway and the notifier go too, and the next `up` starts."""
    env = _embedded_env(tmp_path / "data")
    with running_up(env, tmp_path) as first:
        pass  # a clean start and stop first, so the data directory is set up
    first.proc.wait()
    up = start_up(env, tmp_path)
    proc = up.proc
    up.wait_line("firesafe: api=", timeout=START_TIMEOUT_S)
    up.wait_line("firesafe: gb26875=", timeout=30)
    children = [
        pid
        for pid in _children(proc.pid)
        if any(
            name in Path(f"/proc/{pid}/cmdline").read_bytes()
            for name in (b"firesafe.cli", b"mosquitto", b"amqtt")
        )
    ]
    assert len(children) >= 3  # the API, the gateway, the notifier (and a broker)
    proc.kill()
    proc.wait()
    wait_for(lambda: not any(_alive(pid) for pid in children), timeout=30)
    with running_up(env, tmp_path) as again:
        assert {"api", "mqtt", "database"} <= again.announced.keys()


@pytest.mark.parametrize("lang", ["en", "zh-CN"])
def test_up_with_the_api_port_taken_says_so_and_exits(tmp_path: Path, lang: str) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "firesafe.cli", "--lang", lang, "up"],
            env={
                **os.environ,
                **_embedded_env(tmp_path / "data"),
                "FIRESAFE_API_PORT": str(port),
            },
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode != 0
    assert done.stdout == ""  # no URL, no token printed for an API that cannot start
    said = {
        "en": f"firesafe: port {port} on 127.0.0.1 is already in use: stop what holds it, "
        "or choose another with FIRESAFE_API_PORT (or --api-port)",
        # (an outside check: the one line a Chinese operator gets was English)
        "zh-CN": f"firesafe: 127.0.0.1 上的端口 {port} 已被占用：请停止占用它的程序，"
        "或用 FIRESAFE_API_PORT（或 --api-port）另选一个端口",
    }
    assert done.stderr.strip().splitlines() == [said[lang]]
    # Nothing was started: the data directory holds only the lock taken first.
    assert [p.name for p in (tmp_path / "data").iterdir()] == ["up.lock"]


def test_one_up_per_data_directory_and_a_killed_ones_lock_is_free(tmp_path: Path) -> None:
    """Two `up`s on one data directory would start one embedded database twice
    (seen: Ctrl-C, then `make up` again while the first was still stopping its
    database, whose stop then took the second's down). The second waits a
    moment for the first to finish, then says who holds it."""
    data = tmp_path / "data"
    first = hold_data_dir(data)
    with pytest.raises(EmbeddedServiceError) as refused:
        hold_data_dir(data, wait_s=0.3)
    assert str(refused.value) == (
        f"another `firesafe up` (pid {os.getpid()}) is using {data}: stop it first, "
        "or give this one its own FIRESAFE_DATA_DIR"
    )
    threading.Timer(0.3, os.close, (first,)).start()  # the first one finishes stopping
    os.close(hold_data_dir(data, wait_s=5.0))
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from firesafe.runtime import "
            "hold_data_dir; hold_data_dir(Path(sys.argv[1])); print('held', flush=True); "
            "time.sleep(60)",
            str(data),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None
    assert holder.stdout.readline() == "held\n"
    with pytest.raises(EmbeddedServiceError, match=f"pid {holder.pid}"):
        hold_data_dir(data, wait_s=0.3)
    # A second `up` of the same data directory is told who runs it, even when
    # the API port is taken too (by that first `up`).
    with socket.socket() as port_holder:
        port_holder.bind(("127.0.0.1", 0))
        port_holder.listen()
        done = subprocess.run(
            [sys.executable, "-m", "firesafe.cli", "up"],
            env={
                **os.environ,
                **_embedded_env(data),
                "FIRESAFE_API_PORT": str(port_holder.getsockname()[1]),
            },
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode != 0
    assert f"another `firesafe up` (pid {holder.pid}) is using {data}" in done.stderr
    holder.kill()  # SIGKILL: no cleanup ran, the kernel dropped the lock
    holder.wait()
    os.close(hold_data_dir(data, wait_s=0.3))


def test_ctrl_c_while_the_simulator_publishes_stops_in_order(tmp_path: Path) -> None:
    """Ctrl-C reaches the terminal's whole process group; the broker, API and
    simulator must not all stop at once under ingest (it would wait for a broker
    that is gone, with messages in flight)."""
    env = _embedded_env(tmp_path / "data")
    with running_up(env, tmp_path, ("--sim",)) as up:
        up.wait_line("type=offline")  # the demo's first transition: the simulator is live
    # running_up asserts exit status 0 within 30 s of the Ctrl-C.


def test_a_site_alarm_line_has_no_none_in_it() -> None:
    """A site_silent alarm has no device and no zone: the console says '-'."""
    from datetime import UTC, datetime

    row = {
        "at": datetime(2026, 12, 5, 22, 0, tzinfo=UTC),
        "action": "opened",
        "site_id": "S1",
        "building": "",
        "floor": "",
        "zone": "",
        "device_id": None,
        "type": "offline",
        "verdict": "confirmed",
        "reason": "site_silent",
        "actor": "system",
    }
    line = format_alarm_line(row)
    assert "None" not in line
    assert "zone=- device=- type=offline" in line


def test_ctrl_c_while_up_waits_for_an_unreachable_broker_stops_at_once(
    db: str, tmp_path: Path
) -> None:
    """The newcomer check: with a wrong broker URL, Ctrl-C, a second Ctrl-C and
    SIGTERM were all ignored for 57 s while `up` went on starting (the API's
    announcement, the gateway's 30 s wait for the broker, the notifier)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]  # nothing listens there once closed
    env = {
        "FIRESAFE_DATA_DIR": str(tmp_path / "data"),
        "FIRESAFE_DATABASE_URL": db,
        "FIRESAFE_MQTT_URL": f"mqtt://127.0.0.1:{closed_port}",
        "FIRESAFE_ADMIN_TOKEN": "",
    }
    up = start_up(env, tmp_path, log_level="INFO", stderr=subprocess.STDOUT)
    up.wait_line("schema at version")  # migrated: now starting ingest, the API...
    time.sleep(3)  # ... with ingest retrying the broker meanwhile
    os.killpg(up.proc.pid, signal.SIGINT)
    signalled = time.monotonic()
    code = up.proc.wait(30)
    assert time.monotonic() - signalled < 15
    assert code == 0
    rest = []
    while not up.lines.empty():
        rest.append(up.lines.get())
    assert not [line for line in rest if line.startswith("firesafe: api=")]


def test_sim_args_are_added_to_the_demos() -> None:
    assert runtime.sim_command_args([]) == list(runtime.DEFAULT_SIM_ARGS)
    tz = runtime.sim_command_args(["--site-timezone=Asia/Shanghai"])
    assert tz == [*runtime.DEFAULT_SIM_ARGS, "--site-timezone=Asia/Shanghai"]
    mine = runtime.sim_command_args(["--scenario", "cooking", "--sites=3"])
    assert mine.count("--scenario") == 1
    assert "all" not in mine
    assert mine[-3:] == ["--scenario", "cooking", "--sites=3"]


def test_a_childs_imports_ignore_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An outside check ran `up` from a folder holding its own `api.py`: every
    restart of a child then failed to import (`'api' is not a package`), and
    after five `up` stopped everything. Children start with `python -P`."""
    (tmp_path / "api.py").write_text("raise SystemExit('shadowed')\n")
    (tmp_path / "firesafe.py").write_text("raise SystemExit('shadowed')\n")
    monkeypatch.chdir(tmp_path)
    from firesafe.settings import Settings

    child = runtime._start_child(Settings(), "--help", [])
    assert child.wait(60) == 0
