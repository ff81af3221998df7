"""Registry changes pushed to ingest: LISTEN on the channel a trigger on
`devices` notifies (migration 0140), so a change is picked up at once instead
of at the next poll. It matters most for a new site in sharded mode: its
topics have no subscriber until the owner of its shard subscribes them, and
MQTT drops what nobody is subscribed to. The poll stays, as a safety net."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import psycopg

log = logging.getLogger(__name__)

CHANNEL = "firesafe_devices"
RETRY_MIN_S = 0.5
RETRY_MAX_S = 15.0


async def watch_registry(dsn: str, changed: Callable[[], None], application: str) -> None:
    """Forever (cancel to stop): `changed()` on every notification, and once
    after each (re)connection for what may have been missed meanwhile."""
    delay = RETRY_MIN_S
    while True:
        try:
            async with await psycopg.AsyncConnection.connect(
                dsn, autocommit=True, application_name=application
            ) as conn:
                await conn.execute(f"LISTEN {CHANNEL}")
                delay = RETRY_MIN_S
                changed()
                async for _ in conn.notifies():
                    changed()
        except psycopg.Error as exc:
            log.debug("registry watch: %s; again in %.1f s", exc, delay)
        await asyncio.sleep(delay)
        delay = min(delay * 2, RETRY_MAX_S)
