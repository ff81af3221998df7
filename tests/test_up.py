"""`firesafe up` from the outside: what it prints, /health, data round trip, Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.helpers import Publisher, forget_session, wait_for

pytestmark = pytest.mark.integration

START_TIMEOUT_S = 90.0


@contextmanager
def firesafe_up(env: dict[str, str], cwd: Path) -> Iterator[dict[str, str]]:
    """Run `firesafe up`; yield the `firesafe: key=value` lines it printed."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "firesafe.cli", "up"],
        env={**os.environ, "FIRESAFE_API_PORT": "0", "FIRESAFE_LOG_LEVEL": "WARNING", **env},
        cwd=cwd,
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    announced: dict[str, str] = {}
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        wanted = {"mqtt", "api"} | (set() if env.get("FIRESAFE_ADMIN_TOKEN") else {"admin_token"})
        while not wanted <= announced.keys():
            assert time.monotonic() < deadline, f"up did not announce itself: {announced}"
            line = proc.stdout.readline()
            assert line, f"up exited early with {proc.wait()}"
            if line.startswith("firesafe: ") and "=" in line:
                key, value = line[len("firesafe: ") :].strip().split("=", 1)
                announced[key] = value
        yield announced
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert code == 0, f"firesafe up exited with {code} after Ctrl-C"


def test_up_with_configured_services_uses_only_them(db: str, mqtt_url: str, tmp_path: Path) -> None:
    client_id = f"test-up-{uuid.uuid4().hex[:8]}"
    env = {
        "FIRESAFE_MQTT_URL": mqtt_url,
        "FIRESAFE_DATABASE_URL": db,
        "FIRESAFE_MQTT_CLIENT_ID": client_id,
        "FIRESAFE_DATA_DIR": str(tmp_path / "data"),
    }
    site = f"U{uuid.uuid4().hex[:8]}"
    with firesafe_up(env, tmp_path) as out:
        assert out["mqtt"].endswith(mqtt_url.rsplit(":", 1)[1])  # the configured broker
        api, token = out["api"], out["admin_token"]
        auth = {"Authorization": f"Bearer {token}"}
        # Ready: database up, ingest reporting, and subscribed to the broker.
        health = wait_for(lambda: httpx.get(f"{api}/health").json(), timeout=30)
        health = wait_for(
            lambda: (h := httpx.get(f"{api}/health").json())["status"] == "ok" and h, timeout=30
        )
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
    assert not (tmp_path / "data").exists()  # nothing embedded was started
    forget_session(mqtt_url, client_id)


def test_up_with_nothing_configured_starts_embedded_services(tmp_path: Path) -> None:
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
