"""MQTT clients against a real broker. Every client signs in the same way
(`MqttEndpoint.sign_in`): against a broker that refuses anonymous clients, as
the README's production broker does, ingest, its probe and the suite's
publisher get in with the URL's credentials, and a client without them is
refused. Ingest's session sees a redelivery as one (MQTT DUP)."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from firesafe.embedded import free_port
from firesafe.settings import MqttEndpoint, Settings
from ingest.mqtt import can_connect
from tests.helpers import Publisher, query, register, running_ingest, wait_for

USER, PASSWORD = "ingest", "p@ss:w/rd"  # characters a URL must quote


class _Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def username_pw_set(self, username: str | None, password: str | None = None) -> None:
        self.calls.append(("username_pw_set", (username, password)))

    def tls_set(self) -> None:
        self.calls.append(("tls_set", ()))


@pytest.mark.parametrize(
    ("url", "calls"),
    [
        ("mqtt://127.0.0.1:1883", []),
        ("mqtt://u:p%40w@h:1", [("username_pw_set", ("u", "p@w"))]),
        ("mqtts://h", [("tls_set", ())]),
        ("mqtts://u@h", [("username_pw_set", ("u", None)), ("tls_set", ())]),
    ],
)
def test_sign_in_puts_the_urls_credentials_and_tls_on_a_client(
    url: str, calls: list[tuple[str, tuple[Any, ...]]]
) -> None:
    client = _Recorder()
    MqttEndpoint.parse(url).sign_in(client)
    assert client.calls == calls


@pytest.fixture
def password_broker(tmp_path: Path) -> Iterator[int]:
    if not (shutil.which("mosquitto") and shutil.which("mosquitto_passwd")):
        pytest.skip("needs mosquitto and mosquitto_passwd")
    passwd = tmp_path / "passwd"
    subprocess.run(
        ["mosquitto_passwd", "-b", "-c", str(passwd), USER, PASSWORD],
        check=True,
        capture_output=True,
    )
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\n"
        "allow_anonymous false\n"
        f"password_file {passwd}\n"
        f"log_dest file {tmp_path}/mosquitto.log\n" + ("user root\n" if os.geteuid() == 0 else "")
    )
    proc = subprocess.Popen(
        ["mosquitto", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        anonymous = MqttEndpoint("127.0.0.1", port)
        deadline = time.monotonic() + 10
        while not _listening(port):
            assert time.monotonic() < deadline, "the password broker did not start"
            time.sleep(0.1)
        assert not asyncio.run(can_connect(anonymous, "probe-anon"))  # it does refuse
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_ingest_and_publishers_sign_in_to_a_broker_that_wants_a_password(
    db: str, password_broker: int
) -> None:
    from urllib.parse import quote

    url = f"mqtt://{USER}:{quote(PASSWORD, safe='')}@127.0.0.1:{password_broker}"
    wrong = f"mqtt://{USER}:nope@127.0.0.1:{password_broker}"
    assert asyncio.run(can_connect(MqttEndpoint.parse(url), "probe-ok"))
    assert not asyncio.run(can_connect(MqttEndpoint.parse(wrong), "probe-wrong"))

    site = f"C{uuid.uuid4().hex[:8]}"
    dev = f"{site}-H"
    register(
        db,
        [{"id": dev, "site": site, "building": "B", "floor": "1", "zone": "Z", "kind": "heat"}],
    )
    settings = Settings(
        mqtt_url=url, database_url=db, mqtt_client_id=f"cred-{site}", ingest_mode="single"
    )
    t0 = int(time.time() * 1000)
    with running_ingest(settings):
        publisher = Publisher(url)
        try:
            for i in range(20):
                publisher.send(
                    f"fs/v1/{site}/{dev}/telemetry",
                    {"ts": t0 + i, "seq": i, "v": {"temperature": 21.0}},
                )
            wait_for(
                lambda: (
                    query(db, "SELECT count(*) FROM telemetry WHERE device_id = %s", (dev,))[0][0]
                    == 20
                ),
                timeout=30,
            )
        finally:
            publisher.close()


@pytest.mark.usefixtures("full_broker")
def test_a_message_the_broker_sends_again_is_marked_dup(mqtt_url: str) -> None:
    """Ingest acknowledges a message only once it is committed: one received and
    not acknowledged when the session dropped comes again on the next
    connection with MQTT's DUP flag, which tells a redelivered will from a new
    one (ingest/silence.py)."""
    from ingest.decode import RawMessage
    from ingest.mqtt import MqttSource
    from tests.helpers import forget_session

    client_id = f"dup-{uuid.uuid4().hex[:8]}"
    topic = f"fs/v1/D{uuid.uuid4().hex[:6]}/dev/status"
    endpoint = MqttEndpoint.parse(mqtt_url)

    async def receive_once() -> RawMessage:
        got: asyncio.Queue[RawMessage] = asyncio.Queue()
        source = MqttSource(endpoint, client_id, got.put_nowait, subscriptions=[topic])
        subscribed = asyncio.Event()
        run = asyncio.create_task(source.run(subscribed.set))
        try:
            await asyncio.wait_for(subscribed.wait(), 15)
            if got.empty():
                publisher = Publisher(mqtt_url)
                try:
                    publisher.send(topic, "offline")  # (QoS 1)
                finally:
                    publisher.close()
            return await asyncio.wait_for(got.get(), 15)  # never acknowledged
        finally:
            await source.stop()
            await run

    try:
        first = asyncio.run(receive_once())
        again = asyncio.run(receive_once())
    finally:
        forget_session(mqtt_url, client_id)
    assert (first.payload, first.dup) == (b"offline", False)
    assert (again.payload, again.dup) == (b"offline", True)


def test_a_broker_outage_is_a_few_lines_however_many_sessions(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A sharded ingest holds up to 64 sessions: an outside check's 25 s broker
    restart logged about 280 warnings per process (each session's loss and
    every retry). The first is logged at once, the rest summed up."""
    from ingest.mqtt import MqttSource

    endpoint = MqttEndpoint.parse(f"mqtt://127.0.0.1:{free_port()}")  # nobody listens

    async def outage() -> None:
        sessions = [
            MqttSource(endpoint, f"test-outage-{k}", lambda m: None, shard=k) for k in range(32)
        ]
        tasks = [asyncio.create_task(s.run()) for s in sessions]
        await asyncio.sleep(2.0)
        for s in sessions:
            await s.stop()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    with caplog.at_level("WARNING", logger="ingest.mqtt"):
        asyncio.run(outage())
    lines = [r.getMessage() for r in caplog.records if r.name == "ingest.mqtt"]
    assert lines, "the outage is said"
    assert len(lines) <= 2, lines
    assert "test-outage-" in lines[0]  # which session
