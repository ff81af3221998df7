"""A QoS 1 publisher that tells when the broker has acknowledged each message.

A gateway answers its device only after the broker holds what the device
sent (PUBACK received, and with MQTT 5 a success reason code), so it needs
per-message acknowledgements: paho's network thread reports each PUBACK, and
`publish_all` awaits them on the asyncio loop. While the broker is away
nothing is acknowledged: `publish_all` returns False at once and the gateway
does not confirm; paho reconnects in the background.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from collections.abc import Sequence
from typing import Any, Final

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from firesafe.settings import MqttEndpoint

log = logging.getLogger(__name__)

KEEPALIVE_S: Final = 30
RECONNECT_MIN_S: Final = 1
RECONNECT_MAX_S: Final = 15
# How long one frame's messages may wait for their PUBACKs before the frame is
# given up (not confirmed; the device resends). A broker holds a PUBACK only
# while it persists the message: seconds mean it is in trouble.
ACK_TIMEOUT_S: Final = 10.0
# Messages in flight at once (paho's window); the broker's default is 20 per
# client for MQTT 3.1.1 (max_inflight_messages), 65535 for MQTT 5 receive max.
MAX_INFLIGHT: Final = 1000


class AckPublisher:
    """Publishes at QoS 1 and awaits PUBACKs. Start it inside a running loop."""

    def __init__(self, endpoint: MqttEndpoint, client_prefix: str = "firesafe-gateway") -> None:
        self.endpoint = endpoint
        self.client_id = f"{client_prefix}-{uuid.uuid4().hex[:8]}"
        self._loop: asyncio.AbstractEventLoop | None = None
        # Touched on the loop thread only: paho's thread hands PUBACKs over with
        # call_soon_threadsafe, so a waiter is always registered (right after
        # `publish` returns, before the loop runs anything else) before its ack.
        self._waiting: dict[int, asyncio.Future[bool]] = {}
        self.connected = False
        self._ever_connected = threading.Event()
        self._client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=paho.MQTTv5
        )
        if endpoint.username:
            self._client.username_pw_set(endpoint.username, endpoint.password)
        if endpoint.tls:
            self._client.tls_set()
        self._client.max_inflight_messages_set(MAX_INFLIGHT)
        self._client.max_queued_messages_set(0)
        self._client.reconnect_delay_set(RECONNECT_MIN_S, RECONNECT_MAX_S)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_publish

    # ------------------------------------------------------------- lifecycle
    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._client.connect_async(self.endpoint.host, self.endpoint.port, keepalive=KEEPALIVE_S)
        self._client.loop_start()

    async def wait_connected(self, wait_s: float) -> bool:
        return await asyncio.to_thread(self._ever_connected.wait, wait_s)

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()
        self._fail_all()

    # -------------------------------------------------------------- publish
    async def publish_all(
        self, messages: Sequence[tuple[str, bytes, bool]], ack_timeout_s: float = ACK_TIMEOUT_S
    ) -> bool:
        """Publish (topic, payload, retain) at QoS 1; True once the broker has
        acknowledged every one, False if any was not (not connected, refused,
        connection lost, timeout)."""
        if not messages:
            return True
        if not self.connected or self._loop is None:
            return False
        futures: list[asyncio.Future[bool]] = []
        for topic, payload, retain in messages:
            info = self._client.publish(topic, payload, qos=1, retain=retain)
            if info.rc != paho.MQTT_ERR_SUCCESS:
                return False
            fut: asyncio.Future[bool] = self._loop.create_future()
            self._waiting[info.mid] = fut
            futures.append(fut)
        try:
            results = await asyncio.wait_for(asyncio.gather(*futures), ack_timeout_s)
        except TimeoutError:
            return False
        return all(results)

    # ------------------------------------------------------ paho callbacks
    def _on_connect(
        self, client: Any, userdata: Any, flags: Any, reason: ReasonCode, props: Any
    ) -> None:
        if reason.is_failure:
            log.warning("MQTT broker refused the gateway: %s", reason)
            return
        self.connected = True
        self._ever_connected.set()
        log.info("gateway MQTT connected to %s as %s", self.endpoint.url(), self.client_id)

    def _on_disconnect(
        self, client: Any, userdata: Any, flags: Any, reason: ReasonCode, props: Any
    ) -> None:
        self.connected = False
        log.warning("gateway MQTT disconnected (%s)", reason)
        self._call(self._fail_all)

    def _on_publish(
        self, client: Any, userdata: Any, mid: int, reason: ReasonCode, props: Any
    ) -> None:
        self._call(self._acked, mid, not reason.is_failure)

    def _call(self, fn: Any, *args: Any) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(fn, *args)

    # --------------------------------------------------- on the loop thread
    def _acked(self, mid: int, ok: bool) -> None:
        fut = self._waiting.pop(mid, None)
        if fut is not None and not fut.done():
            fut.set_result(ok)

    def _fail_all(self) -> None:
        """The connection is gone: what was not acknowledged counts as not sent
        (paho may still deliver it after reconnecting: stored once downstream)."""
        waiting, self._waiting = self._waiting, {}
        for fut in waiting.values():
            if not fut.done():
                fut.set_result(False)
