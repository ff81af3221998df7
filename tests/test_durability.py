"""Messages put at risk: in flight and uncommitted when ingest, the broker or the
database connection dies. A held lock on `telemetry` blocks ingest's batch
transaction, so the moment of the failure is certain to fall inside an
uncommitted batch (seen in pg_stat_activity), not merely somewhere near one.

These tests use a broker configured as the README tells production to
(`tests/mosquitto.conf` in CI, `firesafe.embedded` for the broker restarted
here): with Mosquitto's stock `max_queued_messages 1000` the queue test below
fails, as it should.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import paho.mqtt.client as paho
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from firesafe.embedded import EmbeddedBroker, free_port
from firesafe.settings import MqttEndpoint, Settings
from tests.helpers import (
    Publisher,
    create_session,
    drain,
    forget_session,
    ingest_process,
    query,
    register,
    running_ingest,
    stop_process,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("full_broker")]

APP = "firesafe-ingest"  # ingest's application_name


def heat(site: str) -> dict[str, object]:
    return {
        "id": f"{site}-H",
        "site": site,
        "building": "B",
        "floor": "1",
        "zone": "Z",
        "kind": "heat",
        "interval_s": 3600,
    }


def stored(db: str, dev: str) -> tuple[int, int]:
    """(rows, distinct seq) of a device."""
    row = query(
        db, "SELECT count(*), count(DISTINCT seq) FROM telemetry WHERE device_id = %s", (dev,)
    )
    return int(row[0][0]), int(row[0][1])


def dbname(db: str) -> str:
    return str(query(db, "SELECT current_database()")[0][0])


@contextmanager
def telemetry_locked(db: str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """Hold an exclusive lock on `telemetry` until the block ends (or `release`)."""
    conn = psycopg.connect(db)
    conn.execute("SET lock_timeout = 0")
    conn.execute("LOCK TABLE telemetry IN ACCESS EXCLUSIVE MODE")
    try:
        yield conn
    finally:
        if not conn.closed:
            conn.rollback()
            conn.close()


def ingest_blocked_in_a_batch(db: str) -> bool:
    """An ingest backend is inside a transaction, waiting for the telemetry lock."""
    rows = query(
        db,
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s AND datname = %s "
        "AND wait_event_type = 'Lock' AND xact_start IS NOT NULL",
        (APP, dbname(db)),
    )
    return int(rows[0][0]) > 0


def terminate_ingest_backends(db: str) -> int:
    return int(
        query(
            db,
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = %s AND datname = %s",
            (APP, dbname(db)),
        )[0][0]
    )


def send_all(pub: Publisher, topic: str, t0: int, seqs: range) -> None:
    for i in seqs:
        pub.send(topic, {"ts": t0 + i, "seq": i, "v": {"temperature": 20.0}})


def test_ingest_sigkilled_with_an_uncommitted_batch_loses_nothing(
    db: str, mqtt_url: str, ingest_settings: Settings, site: str
) -> None:
    """`firesafe ingest` holds a batch it cannot commit (and has therefore not
    acknowledged); it is SIGKILLed. Nothing of the batch is in the database, and
    a new ingest on the same session stores every message exactly once."""
    register(db, [heat(site)])
    dev = f"{site}-H"
    topic = f"fs/v1/{site}/{dev}/telemetry"
    total = 400
    t0 = int(time.time() * 1000)
    create_session(mqtt_url, ingest_settings.mqtt_client_id)
    proc = ingest_process(ingest_settings)
    pub = Publisher(mqtt_url)
    try:
        send_all(pub, topic, t0, range(1))
        wait_for(lambda: stored(db, dev) == (1, 1), timeout=30)  # ingest is up
        with telemetry_locked(db):
            send_all(pub, topic, t0, range(1, total))  # every one acknowledged by the broker
            wait_for(lambda: ingest_blocked_in_a_batch(db), timeout=30)
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            # The server would notice the dead client on its own; make it certain.
            wait_for(
                lambda: terminate_ingest_backends(db) >= 0 and not ingest_blocked_in_a_batch(db)
            )
        assert stored(db, dev) == (1, 1)  # the batch in flight was not committed
        proc = ingest_process(ingest_settings)
        wait_for(lambda: stored(db, dev)[0] >= total, timeout=60)
        drain(db, pub, site)
        assert stored(db, dev) == (total, total)
    finally:
        pub.close()
        returncode = stop_process(proc)
        forget_session(mqtt_url, ingest_settings.mqtt_client_id)
    assert returncode == 0


def test_database_drops_ingest_inside_an_uncommitted_batch(
    db: str, ingest_settings: Settings, publisher: Publisher, site: str
) -> None:
    """The database ends ingest's sessions while a batch waits inside its
    transaction: the batch is rolled back, retried, and stored once."""
    register(db, [heat(site)])
    dev = f"{site}-H"
    topic = f"fs/v1/{site}/{dev}/telemetry"
    t0 = int(time.time() * 1000)
    total = 300
    with running_ingest(ingest_settings):
        send_all(publisher, topic, t0, range(1))
        wait_for(lambda: stored(db, dev) == (1, 1))
        with telemetry_locked(db):
            send_all(publisher, topic, t0, range(1, total))
            wait_for(lambda: ingest_blocked_in_a_batch(db), timeout=30)
            assert terminate_ingest_backends(db) >= 1
        wait_for(lambda: stored(db, dev)[0] >= total, timeout=60)
        drain(db, publisher, site)
    assert stored(db, dev) == (total, total)


def writable_broker_dir(path: Path) -> Path:
    """A state directory Mosquitto can write: run as root it drops to the
    `mosquitto` user (as .ci/run arranges for the suite's own broker)."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        try:
            pw = pwd.getpwnam("mosquitto")
        except KeyError:
            return path
        os.chown(path, pw.pw_uid, pw.pw_gid)
    return path


class StreamPublisher:
    """A device-side QoS 1 stream on a persistent session (paho resends what the
    broker had not acknowledged when the connection comes back)."""

    def __init__(self, url: str) -> None:
        ep = MqttEndpoint.parse(url)
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"test-stream-{uuid.uuid4().hex[:8]}",
            protocol=paho.MQTTv311,
            clean_session=False,
        )
        self.client.max_inflight_messages_set(100)
        self.client.max_queued_messages_set(0)
        self.client.reconnect_delay_set(1, 1)
        # PUBACKs counted by the callback: a message published while the broker is
        # away is kept by paho and sent on reconnect (its info says "no connection").
        self.acked: set[int] = set()
        self.mids: list[int] = []
        self.client.on_publish = lambda c, u, mid, *rest: self.acked.add(mid)
        self.client.connect(ep.host, ep.port)
        self.client.loop_start()
        self.sent = threading.Event()

    def stream(self, topic: str, t0: int, seqs: range, paced: threading.Event) -> None:
        for i in seqs:
            payload = b'{"ts": %d, "seq": %d, "v": {"temperature": 20.0}}' % (t0 + i, i)
            self.mids.append(self.client.publish(topic, payload, qos=1).mid)
            if i == seqs.start + len(seqs) // 2:
                paced.set()  # half way: the broker may go now
            time.sleep(0.002)  # a device stream, not a burst (pacing only; no oracle)
        self.sent.set()

    def all_acknowledged(self) -> bool:
        return self.sent.is_set() and self.acked.issuperset(self.mids)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.mark.skipif(shutil.which("mosquitto") is None, reason="needs the mosquitto binary")
def test_broker_restart_mid_stream_with_an_uncommitted_batch(db: str, tmp_path: Path) -> None:
    """A QoS 1 stream is still being published, and ingest holds an uncommitted
    (so unacknowledged) batch, when the broker stops and starts again. Every
    message ends up stored exactly once."""
    site = f"K{uuid.uuid4().hex[:8]}"
    register(db, [heat(site)])
    dev = f"{site}-H"
    topic = f"fs/v1/{site}/{dev}/telemetry"
    broker = EmbeddedBroker(writable_broker_dir(tmp_path / "broker"), port=free_port())
    url = broker.start()
    settings = Settings(
        mqtt_url=url, database_url=db, mqtt_client_id=f"dur-{site}", ingest_mode="single"
    )
    t0 = int(time.time() * 1000)
    total = 1500
    stream: StreamPublisher | None = None
    try:
        with running_ingest(settings) as ingest:
            pub = Publisher(url)
            send_all(pub, topic, t0, range(1))
            pub.close()
            wait_for(lambda: stored(db, dev) == (1, 1))
            stream = StreamPublisher(url)
            half = threading.Event()
            with telemetry_locked(db) as lock:
                thread = threading.Thread(
                    target=stream.stream, args=(topic, t0, range(1, total), half)
                )
                thread.start()
                assert half.wait(60)
                wait_for(lambda: ingest_blocked_in_a_batch(db), timeout=30)
                broker.stop()  # ingest's batch is uncommitted and unacknowledged
                broker.start()  # same port, same persistence
                lock.rollback()  # the batch commits now, its acks go nowhere
            thread.join(120)
            wait_for(stream.all_acknowledged, timeout=60)
            wait_for(lambda: ingest.service is not None and ingest.service.subscribed, timeout=40)
            wait_for(lambda: stored(db, dev)[1] >= total, timeout=60)
            pub = Publisher(url)
            drain(db, pub, site)
            pub.close()
    finally:
        if stream is not None:
            stream.close()
        broker.stop()
    assert stored(db, dev) == (total, total)


def test_queue_holds_more_than_the_stock_1000_messages(
    db: str, mqtt_url: str, ingest_settings: Settings, publisher: Publisher, site: str
) -> None:
    """Ingest is down while 2,500 messages arrive: the broker must queue them
    all for its persistent session (Mosquitto's stock max_queued_messages 1000
    drops the rest: configure the test broker as tests/mosquitto.conf)."""
    register(db, [heat(site)])
    dev = f"{site}-H"
    total = 2500
    create_session(mqtt_url, ingest_settings.mqtt_client_id)
    t0 = int(time.time() * 1000)
    send_all(publisher, f"fs/v1/{site}/{dev}/telemetry", t0, range(total))
    with running_ingest(ingest_settings):
        # The queue is delivered in order: once a sentinel sent now is committed,
        # everything the broker kept is in.
        drain(db, publisher, site)
    assert stored(db, dev) == (total, total), (
        "the broker dropped queued messages: is it configured as tests/mosquitto.conf?"
    )


@pytest.mark.skipif(shutil.which("mosquitto") is None, reason="needs the mosquitto binary")
def test_embedded_broker_restart_keeps_queued_messages(db: str, tmp_path: Path) -> None:
    """`firesafe up`'s embedded broker: messages queued for a stopped ingest
    survive a restart of the broker (its persistence is written and read)."""
    site = f"Q{uuid.uuid4().hex[:8]}"
    register(db, [heat(site)])
    dev = f"{site}-H"
    broker = EmbeddedBroker(tmp_path / "broker", port=free_port())
    url = broker.start()
    client_id = f"dur-{site}"
    settings = Settings(
        mqtt_url=url, database_url=db, mqtt_client_id=client_id, ingest_mode="single"
    )
    total = 200
    try:
        create_session(url, client_id)
        pub = Publisher(url)
        send_all(pub, f"fs/v1/{site}/{dev}/telemetry", int(time.time() * 1000), range(total))
        pub.close()
        broker.stop()
        broker.start()
        with running_ingest(settings):
            pub = Publisher(url)
            drain(db, pub, site)  # everything queued before the sentinel is in
            pub.close()
    finally:
        broker.stop()
    assert stored(db, dev) == (total, total)


@pytest.mark.skipif(shutil.which("mosquitto") is None, reason="needs the mosquitto binary")
def test_a_broker_that_lost_ingests_session_is_reported(
    db: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The fault check of a sharded deployment: a broker killed without saving
    (Mosquitto's autosave_interval) came back without ingest's session, so what
    was published before ingest subscribed again was dropped, and nothing said
    so. Ingest now warns when a reconnection finds its session gone; a normal
    restart (sessions saved) does not warn."""
    site = f"L{uuid.uuid4().hex[:8]}"
    register(db, [heat(site)])
    state = writable_broker_dir(tmp_path / "broker")
    broker = EmbeddedBroker(state, port=free_port())
    url = broker.start()
    settings = Settings(
        mqtt_url=url, database_url=db, mqtt_client_id=f"lost-{site}", ingest_mode="single"
    )

    def session_lost() -> list[str]:
        return [r.getMessage() for r in caplog.records if "had lost the session" in r.getMessage()]

    def connections() -> int:
        return sum("MQTT connected" in r.getMessage() for r in caplog.records)

    caplog.set_level("INFO", logger="ingest.mqtt")
    try:
        with running_ingest(settings):
            wait_for(lambda: connections() == 1, timeout=30)
            broker.stop()  # a clean stop saves the sessions
            broker.start()
            wait_for(lambda: connections() == 2, timeout=40)
            assert session_lost() == []
            broker.stop()
            for saved in state.glob("mosquitto.db*"):
                saved.unlink()  # as if killed before its first save
            broker.start()
            wait_for(lambda: bool(session_lost()), timeout=40)
            assert f"lost-{site}" in session_lost()[0]
    finally:
        broker.stop()
