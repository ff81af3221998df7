"""Running the GB/T 26875.3 gateway: broker connection, registry client, TCP server."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from firesafe.settings import Settings, parse_listen
from gateways.directory import Directory
from gateways.gb26875.server import Gateway, raise_file_limit
from gateways.mqtt import AckPublisher

log = logging.getLogger(__name__)

DEFAULT_LISTEN = "0.0.0.0:9026"
# The broker may still be starting (under `firesafe up`): wait this long for it
# before listening, so the first frames are not all refused.
BROKER_WAIT_S = 30.0


async def run(
    settings: Settings,
    stop: asyncio.Event,
    *,
    listen: str | None = None,
    on_ready: Callable[[str, int], None] | None = None,
) -> None:
    """Serve until `stop` is set."""
    host, port = parse_listen(listen or settings.gb26875_listen or DEFAULT_LISTEN)
    token = settings.gateway_token or settings.admin_token
    if token is None:
        log.warning("no FIRESAFE_GATEWAY_TOKEN: the registry API will refuse the gateway")
    publisher = AckPublisher(settings.mqtt, "firesafe-gb26875")
    publisher.start()
    directory = Directory(settings.api_url, token.get_secret_value() if token else None)
    try:
        if not await publisher.wait_connected(BROKER_WAIT_S):
            log.warning("broker not reachable yet; frames stay unconfirmed until it is")
        files = raise_file_limit()
        gateway = Gateway(publisher, directory, idle_s=settings.gb26875_idle_s)
        log.info("at most %d connections (open-file limit %d)", gateway.max_connections, files)
        await gateway.serve(host, port, stop, on_ready)
    finally:
        await directory.close()
        publisher.stop()
