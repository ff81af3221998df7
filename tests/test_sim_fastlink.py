"""The simulator's shared connection meets a broker restart as a device does:
paced, it counts what was lost and connects again; flat out (a benchmark),
it stops with an error."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from device_sim.fastlink import FastLink, FastLinkError
from device_sim.timeline import Message
from firesafe.embedded import EmbeddedBroker, free_port
from firesafe.settings import MqttEndpoint

pytestmark = pytest.mark.skipif(shutil.which("mosquitto") is None, reason="needs mosquitto")


def _msg(i: int) -> Message:
    return Message("fs/v1/S/D/telemetry", b'{"i": %d}' % i, 1, False, i)


def _settle(link: FastLink, until: float = 10.0) -> None:
    deadline = time.monotonic() + until
    while time.monotonic() < deadline and (link.pending or not link.connected):
        link.service(0.05)


def test_a_paced_link_rides_out_a_broker_restart(tmp_path: Path) -> None:
    broker = EmbeddedBroker(tmp_path / "broker", port=free_port())
    broker.start()
    assert broker.port is not None
    link = FastLink(MqttEndpoint("127.0.0.1", broker.port), "sim-shared", resilient=True)
    try:
        link.connect()
        link.publish(_msg(0))
        _settle(link)
        assert (link.pending, link.errors) == (0, 0)
        broker.stop()
        for i in range(1, 4):  # the broker is away: lost, counted, no exception
            link.publish(_msg(i))
            link.service(0.05)
        assert not link.connected
        assert link.errors >= 1
        broker.start()  # same port
        _settle(link)
        assert link.connected
        before = link.errors
        link.publish(_msg(9))
        _settle(link)
        assert link.pending == 0
        assert link.errors == before  # acknowledged by the broker that came back
    finally:
        link.close()
        broker.stop()


def test_a_flat_out_link_stops_when_the_broker_goes(tmp_path: Path) -> None:
    broker = EmbeddedBroker(tmp_path / "broker", port=free_port())
    broker.start()
    assert broker.port is not None
    link = FastLink(MqttEndpoint("127.0.0.1", broker.port), "bench-shared")
    try:
        link.connect()
        broker.stop()

        def publish_on() -> None:
            for i in range(100):
                link.publish(_msg(i))
                link.service(0.05)

        with pytest.raises(FastLinkError):
            publish_on()
    finally:
        link.close()
        broker.stop()
