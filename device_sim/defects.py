"""A single real-time device, correct or deliberately broken in one way.

Device makers can run it to see what the conformance check reports; the
tests run one per rule and expect exactly that rule to fail.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from typing import Any

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from device_sim import contract as c
from firesafe.settings import MqttEndpoint

# Defect -> the conformance rule it breaks.
DEFECTS: dict[str, str] = {
    "bad_topic": "topic_shape",  # an extra topic level
    "bad_schema": "payload_schema",  # `v` is a list, not an object
    "non_finite": "finite_numbers",  # NaN in a reading
    "clock_skew": "ts_sanity",  # clock two minutes fast
    "seq_gap": "seq",  # skips a number now and then
    "slow_interval": "interval",  # reports at twice its declared period
    "no_status": "status_retained",  # never announces itself
    "will_not_retained": "last_will",  # last will without the retain flag
    "bad_batch": "gateway_batch",  # an empty gateway batch besides its own readings
    "status_qos0": "qos",  # announces itself at QoS 0 (retained all the same)
    "wrong_case": "topic_shape",  # readings on FS/v1/...: a topic nobody subscribes to
}
CLOCK_SKEW_MS = 120_000


class TestDevice:
    """Publishes a `smoke` device's readings every `interval_s` until `stop()`."""

    __test__ = False  # not a pytest class

    def __init__(
        self, endpoint: MqttEndpoint, site: str, device: str, interval_s: float, defect: str = ""
    ) -> None:
        if defect and defect not in DEFECTS:
            raise ValueError(f"unknown defect {defect!r}; one of {', '.join(DEFECTS)}")
        self.endpoint = endpoint
        self.site = site
        self.device = device
        self.interval_s = interval_s
        self.defect = defect
        self.status = c.status_topic(site, device)
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=device)
        self.client.will_set(self.status, b"offline", qos=1, retain=defect != "will_not_retained")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"device-{device}", daemon=True)
        self.seq = 0

    def start(self) -> None:
        self.client.connect(self.endpoint.host, self.endpoint.port, 30)
        self.client.loop_start()
        if self.defect != "no_status":
            qos = 0 if self.defect == "status_qos0" else 1
            self.client.publish(self.status, b"online", qos=qos, retain=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        if self.defect == "will_not_retained":
            return  # already dropped
        self.client.disconnect()
        self.client.loop_stop()

    def _reading(self, n: int) -> dict[str, Any]:
        ts = int(time.time() * 1000) + (CLOCK_SKEW_MS if self.defect == "clock_skew" else 0)
        seq = self.seq
        self.seq += 2 if self.defect == "seq_gap" and n % 3 == 2 else 1
        return {"ts": ts, "seq": seq, "v": {"obscuration": 0.12, "temperature": 21.5}}

    def _run(self) -> None:
        period = self.interval_s * (2 if self.defect == "slow_interval" else 1)
        topic = c.telemetry_topic(self.site, self.device)
        n = 0
        while not self._stop.wait(0 if n == 0 else period):
            body = self._reading(n)
            payload = orjson.dumps(body)
            if self.defect == "bad_topic":
                topic = topic + "/extra"
            elif self.defect == "wrong_case":
                topic = topic.replace(c.TOPIC_ROOT, c.TOPIC_ROOT.upper(), 1)
            elif self.defect == "bad_schema":
                payload = orjson.dumps({**body, "v": [0.12, 21.5]})
            elif self.defect == "non_finite":
                payload = payload.replace(b"0.12", b"NaN")
            elif self.defect == "bad_batch":
                empty = orjson.dumps({"ts": body["ts"], "readings": []})
                self.client.publish(c.batch_topic(self.site, f"{self.device}-GW"), empty, qos=1)
            self.client.publish(topic, payload, qos=1)
            n += 1
            # Six readings before the drop: with three, one delayed publish (a loaded
            # machine) moved the median gap and failed `interval` as well (CI saw it).
            if self.defect == "will_not_retained" and n == 6:
                self._drop()
                return

    def _drop(self) -> None:
        """Lose the connection without DISCONNECT: the broker sends the last will."""
        time.sleep(0.1)  # let the last publish go out
        sock = self.client.socket()
        if isinstance(sock, socket.socket):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self.client.loop_stop()
