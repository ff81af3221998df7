"""Nothing is lost when the broker restarts or the database drops ingest's
connections (the ingest-process restart is in test_ingest_integration)."""

from __future__ import annotations

import shutil
import time
import uuid
from pathlib import Path

import pytest

from firesafe.embedded import EmbeddedBroker, free_port
from firesafe.settings import Settings
from tests.helpers import (
    Publisher,
    drain,
    forget_session,
    query,
    register,
    running_ingest,
    wait_for,
)

pytestmark = pytest.mark.integration


def stored(db: str, device: str) -> int:
    return int(query(db, "SELECT count(*) FROM telemetry WHERE device_id = %s", (device,))[0][0])


def backends(db: str, dbname: str) -> int:
    return int(
        query(
            db,
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE application_name = 'firesafe-ingest' AND datname = %s",
            (dbname,),
        )[0][0]
    )


def device(site: str) -> dict[str, object]:
    return {
        "id": f"{site}-H",
        "site": site,
        "building": "B",
        "floor": "1",
        "zone": "Z",
        "kind": "heat",
        "interval_s": 3600,
    }


@pytest.mark.skipif(shutil.which("mosquitto") is None, reason="needs the mosquitto binary")
def test_broker_restart_loses_nothing(db: str, tmp_path: Path) -> None:
    site = f"K{uuid.uuid4().hex[:8]}"
    register(db, [device(site)])
    dev = f"{site}-H"
    broker = EmbeddedBroker(tmp_path / "broker", port=free_port())
    url = broker.start()
    settings = Settings(mqtt_url=url, database_url=db, mqtt_client_id=f"resil-{site}")
    t0 = int(time.time() * 1000)
    try:
        with running_ingest(settings) as ingest:
            pub = Publisher(url)
            for i in range(100):
                pub.send(f"fs/v1/{site}/{dev}/telemetry", {"ts": t0 + i, "seq": i, "v": {}})
            pub.close()
            wait_for(lambda: stored(db, dev) == 100)
            broker.stop()  # the broker goes away (and saves its state)
            broker.start()  # same port, same persistence directory
            assert ingest.service is not None
            wait_for(
                lambda: ingest.service is not None and ingest.service.source.subscribed, timeout=40
            )
            pub = Publisher(url)
            for i in range(100, 200):
                pub.send(f"fs/v1/{site}/{dev}/telemetry", {"ts": t0 + i, "seq": i, "v": {}})
            pub.close()
            wait_for(lambda: stored(db, dev) == 200, timeout=30)
    finally:
        broker.stop()
    assert (
        query(db, "SELECT count(DISTINCT seq) FROM telemetry WHERE device_id = %s", (dev,))[0][0]
        == 200
    )


@pytest.mark.usefixtures("full_broker")
def test_database_connection_loss_loses_nothing(db: str, mqtt_url: str) -> None:
    site = f"P{uuid.uuid4().hex[:8]}"
    register(db, [device(site)])
    dev = f"{site}-H"
    settings = Settings(mqtt_url=mqtt_url, database_url=db, mqtt_client_id=f"resil-{site}")
    t0 = int(time.time() * 1000)
    dbname = query(db, "SELECT current_database()")[0][0]
    pub = Publisher(mqtt_url)
    try:
        with running_ingest(settings):
            for i in range(300):
                pub.send(f"fs/v1/{site}/{dev}/telemetry", {"ts": t0 + i, "seq": i, "v": {}})
                if i in (100, 200):  # the database drops ingest's sessions mid-stream
                    wait_for(lambda: backends(db, dbname) >= 2, timeout=30)  # (re)connected
                    killed = query(
                        db,
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE application_name = 'firesafe-ingest' AND datname = %s",
                        (dbname,),
                    )[0][0]
                    assert killed >= 2
            wait_for(lambda: stored(db, dev) == 300, timeout=40)
            drain(db, pub, site)  # redeliveries after the reconnects were committed too
    finally:
        pub.close()
        forget_session(mqtt_url, settings.mqtt_client_id)
    assert stored(db, dev) == 300
