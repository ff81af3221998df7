"""Publishing over the real broker: what arrives is what was simulated, and valid."""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.subscribeoptions import SubscribeOptions

from device_sim import contract as c
from device_sim.labels import read_labels, write_labels
from device_sim.payload_schemas import errors
from device_sim.publisher import Publisher
from device_sim.runner import Job, run_job
from device_sim.timeline import Message
from firesafe.settings import MqttEndpoint
from tests.helpers import Publisher as HelperPublisher

# MQTT 5 subscription options and last wills over real sessions.
pytestmark = pytest.mark.usefixtures("full_broker")


class Capture:
    """A separate subscriber recording everything under some sites."""

    def __init__(self, url: str, prefix: str) -> None:
        ep = MqttEndpoint.parse(url)
        self.got: list[tuple[str, bytes, bool]] = []
        self.lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.on_message = self._on_message
        self.prefix = prefix
        self.url = url
        ready = threading.Event()
        self.client.on_subscribe = lambda *_a: ready.set()
        self.client.connect(ep.host, ep.port)
        self.client.loop_start()
        self.client.subscribe("fs/v1/#", options=SubscribeOptions(qos=1, retainAsPublished=True))
        assert ready.wait(5)

    def _on_message(self, _c: mqtt.Client, _u: object, m: mqtt.MQTTMessage) -> None:
        if m.topic.split("/")[2].startswith(self.prefix):
            with self.lock:
                self.got.append((m.topic, bytes(m.payload), bool(m.retain)))

    def wait_for(self, n: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while len(self.got) < n and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(self.got) >= n, f"{len(self.got)} of {n} messages arrived"

    def drain(self) -> None:
        """Everything published (and acknowledged) before this call has arrived:
        a sentinel published now reaches this subscriber after it. The
        sentinel itself is not kept."""
        topic = f"fs/v1/{self.prefix}sentinel/{secrets.token_hex(6)}/telemetry"
        pub = HelperPublisher(self.url)
        try:
            pub.send(topic, b"{}")
        finally:
            pub.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with self.lock:
                if any(t == topic for t, _, _ in self.got):
                    self.got = [m for m in self.got if m[0] != topic]
                    return
            time.sleep(0.05)
        raise AssertionError("the sentinel never arrived")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def prefix() -> str:
    return f"t{secrets.token_hex(3)}x"


@pytest.fixture
def capture(mqtt_url: str, prefix: str) -> Iterator[Capture]:
    cap = Capture(mqtt_url, prefix)
    yield cap
    cap.close()


def _job(mqtt_url: str, prefix: str, **kw: object) -> Job:
    base: dict[str, object] = dict(
        sites=2, devices_per_site=25, seed=3, scenarios=("flaming_fire", "steam", "offline_will"),
        duration_s=900.0, start_ms=int(time.time() * 1000) - 900_000,
        endpoint=MqttEndpoint.parse(mqtt_url), speed=None, site_prefix=prefix,
        gateway_fraction=0.3, connections=10,
    )  # fmt: skip
    base.update(kw)
    return Job(**base)  # type: ignore[arg-type]


def test_published_messages_validate_and_match_the_simulation(
    mqtt_url: str, prefix: str, capture: Capture, tmp_path: Path
) -> None:
    # Paced (200x event time): a broker with stock limits (max_queued_messages 1000)
    # drops what a slower subscriber cannot take in time, and this capture client
    # shares the CPU with the publishers.
    job = _job(mqtt_url, prefix, speed=200.0)
    sim = job.simulation()
    expected: list[Message] = list(sim.messages)
    labels = tmp_path / "labels.jsonl"
    write_labels(labels, sim.labels)
    totals = run_job(job, processes=1)
    assert totals.errors == 0
    assert totals.messages == len(expected)
    capture.wait_for(len(expected))
    capture.drain()  # and nothing more (a duplicate) was on its way
    got = capture.got
    # Every non-status message arrives exactly as simulated (QoS 1 end to end).
    sent = Counter((m.topic, m.payload) for m in expected if not m.topic.endswith("/status"))
    seen = Counter((t, p) for t, p, _ in got if not t.endswith("/status"))
    assert seen == sent
    for topic, payload, retain in got:
        kind = "batch" if "/gateway/" in topic else topic.rsplit("/", 1)[1]
        if kind == "status":
            assert retain, topic  # retained, as the contract asks
            assert errors("status", payload.decode()) == []
        else:
            assert errors(kind, json.loads(payload)) == [], topic
    # Labels on disk match what was injected, and the fire really crossed 57 °C.
    rows = read_labels(labels)
    assert [r["scenario"] for r in rows] == ["flaming_fire", "steam", "offline_will"]
    fire = rows[0]
    temps = [
        json.loads(p)["v"].get("temperature", 0.0)
        for t, p, _ in got
        if t.endswith("/telemetry") and t.split("/")[3] in fire["devices"]
    ] + [
        r["v"].get("temperature", 0.0)
        for t, p, _ in got
        if "/gateway/" in t
        for r in json.loads(p)["readings"]
        if r["device"] in fire["devices"]
    ]
    assert max(temps) > 57.0
    # The device that dropped off held its own connection: the broker sent its will.
    will = rows[2]
    status = c.status_topic(will["site"], will["devices"][0])
    offline = [(p, r) for t, p, r in got if t == status and p == b"offline"]
    online = [(p, r) for t, p, r in got if t == status and p == b"online"]
    assert offline
    assert all(r for _, r in offline)
    assert len(online) >= 2  # on first connect and after coming back


def test_own_connections_are_the_first_direct_devices(mqtt_url: str, prefix: str) -> None:
    job = _job(mqtt_url, prefix, connections=4)
    pub = Publisher(job.simulation(), job.endpoint, None, connections=4)
    owned = pub.owned_devices()
    gw = dict(zip([d.id for d in pub.sim.estate.devices], pub.sim.gateways(), strict=True))
    assert len(owned) == 4
    assert all(gw[d] is None for d in owned)


def test_paced_publishing_keeps_event_time(mqtt_url: str, prefix: str, capture: Capture) -> None:
    # 60 s of event time at 60x: about one wall second.
    job = _job(mqtt_url, prefix, sites=1, devices_per_site=20, scenarios=(), duration_s=60.0,
               speed=60.0, connections=0, gateway_fraction=0.0)  # fmt: skip
    t0 = time.monotonic()
    totals = run_job(job, processes=1)
    wall = time.monotonic() - t0
    assert totals.errors == 0
    assert totals.readings > 0
    # Paced, not as fast as possible: 60 s of event time take at least about a
    # second. (No upper bound: a loaded machine may only make it slower.)
    assert wall >= 0.8


def test_two_processes_publish_the_same_traffic(
    mqtt_url: str, prefix: str, capture: Capture
) -> None:
    job = _job(mqtt_url, prefix, sites=4, devices_per_site=10, scenarios=("call_point",),
               duration_s=300.0, connections=2)  # fmt: skip
    expected = list(job.simulation().messages)
    totals = run_job(job, processes=2)
    assert totals.errors == 0
    assert totals.messages == len(expected)
    capture.wait_for(len(expected))
    capture.drain()
    sent = Counter((m.topic, m.payload) for m in expected if not m.topic.endswith("/status"))
    seen = Counter((t, p) for t, p, _ in capture.got if not t.endswith("/status"))
    assert seen == sent


def test_a_reconnecting_device_waits_for_its_connack(mqtt_url: str) -> None:
    """The fault check of a sharded deployment saw false last wills after a
    broker restart: a device link whose CONNACK had not come within 50 ms
    reconnected again, dropping that connection without a DISCONNECT, and
    the broker published the device's will. A link now waits for the CONNACK
    of the connection it opened (here held back by the network for 1.5 s)."""
    from device_sim.publisher import Link
    from tests.netproxy import CuttableProxy

    ep = MqttEndpoint.parse(mqtt_url)
    proxy = CuttableProxy(ep.host, ep.port)
    try:
        via = MqttEndpoint.parse(f"mqtt://127.0.0.1:{proxy.port}")
        link = Link(via, f"test-connack-{secrets.token_hex(4)}")
        link.connect()
        assert proxy.accepted == 1
        proxy.hold()  # the next CONNECT and its CONNACK go nowhere for now
        proxy.cut()
        proxy.restore()
        until = time.monotonic() + 1.5
        while time.monotonic() < until:
            link.service(0.01)
        assert proxy.accepted == 2, proxy.accepted  # one reconnection, still waiting
        proxy.release()
        until = time.monotonic() + 10
        while not link.connected and time.monotonic() < until:
            link.service(0.01)
        assert link.connected
        assert proxy.accepted == 2
        link.close()
    finally:
        proxy.close()
