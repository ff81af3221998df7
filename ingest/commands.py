"""The linkage outbox's sender: pending commands out at QoS 1, marked
acknowledged only once the broker has acknowledged them.

Commands are written as pending rows in the transaction that changed the fire
state (`ingest/linkage.py`); this task publishes them after commit. A command
whose PUBACK does not come (broker down, connection lost) stays pending and is
sent again after the reconnect, or by the next owner after a restart. A sign
may see a command twice (a PUBACK lost on the way); commands are states, so
that is harmless, while a lost one would leave a sign pointing into a fire.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import Any

import psycopg

from firesafe.throttle import ThrottledWarning
from ingest.mqtt import MqttError, MqttSource
from storage import ingest_store as store

log = logging.getLogger(__name__)

SEND_BATCH = 500  # commands per round; a whole building's signs go in one round
PUBACK_TIMEOUT_S = 5.0  # then the round ends and what is unacknowledged waits
IDLE_POLL_S = 2.0  # also look without a wake-up: another process may have written some
RETRY_S = 1.0  # after a failed round (broker or database away)


class _Unacknowledged(Exception):
    """Some commands of the round are still pending (broker away or slow)."""


class CommandSender:
    """One long-lived task per MQTT session: `wake()` after a commit that wrote commands."""

    def __init__(
        self,
        source_for: Callable[[str], MqttSource | None],
        dsn: str,
        sites: Callable[[], Sequence[str] | None],
        *,
        application_name: str,
    ) -> None:
        self.source_for = source_for  # the session that publishes to a site
        self.dsn = dsn
        self.sites = sites  # the sites this sender serves (None: all)
        self.application_name = application_name
        self._wake = asyncio.Event()
        self._stopping = False
        self._conn: psycopg.AsyncConnection[Any] | None = None
        # Retried every second through an outage: one line, then one per 10 s.
        self._not_sent = ThrottledWarning(
            log, "linkage sender: database or broker away; any commands waiting are sent once back"
        )
        self.sent = 0
        self.pending = 0

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        """Finish the round under way (its acknowledgements are recorded), then end."""
        self._stopping = True
        self._wake.set()

    async def abandon(self) -> None:
        """The database does not answer and we are stopping: close the connection
        so that a query hung on it ends at once (psycopg would first ask that
        server to cancel it, 10 s); what was not marked stays pending."""
        self._stopping = True
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close()

    async def run(self) -> None:
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), IDLE_POLL_S)
                self._wake.clear()
                if self._stopping:
                    return
                try:
                    if self._conn is None or self._conn.closed:
                        self._conn = await psycopg.AsyncConnection.connect(
                            self.dsn, autocommit=True, application_name=self.application_name
                        )
                    more = await self._round(self._conn)
                except _Unacknowledged as exc:
                    log.info("linkage: %s; retrying", exc)
                    await asyncio.sleep(RETRY_S)
                    self._wake.set()
                    continue
                except (psycopg.Error, MqttError) as exc:
                    if self._stopping:
                        return  # abandoned: its connection was closed under it
                    self._not_sent(str(exc).strip().replace("\n", " "))
                    await self._close()
                    await asyncio.sleep(RETRY_S)
                    self._wake.set()
                    continue
                if more:
                    self._wake.set()
        finally:
            await self._close()

    async def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()

    async def _round(self, conn: psycopg.AsyncConnection[Any]) -> bool:
        """Send one round; True when the round was full (more may wait)."""
        rows = await store.pending_commands(conn, self.sites(), SEND_BATCH)
        self.pending = len(rows)
        if not rows:
            return False
        futures: dict[int, asyncio.Future[None]] = {}
        for row in rows:
            source = self.source_for(row.site)
            future = (
                None
                if source is None
                else source.publish(f"fs/v1/{row.site}/{row.device_id}/cmd", row.payload)
            )
            if future is None:
                continue  # its session is not connected: sent after the reconnect
            futures[row.id] = future
        if futures:
            await asyncio.wait(futures.values(), timeout=PUBACK_TIMEOUT_S)
        acked = [
            i
            for i, f in futures.items()
            if f.done() and not f.cancelled() and f.exception() is None
        ]
        for f in futures.values():
            f.cancel()  # those not acknowledged stay pending
        if futures:
            await store.mark_commands(conn, acked, list(futures))
        self.sent += len(acked)
        if acked:
            log.info("linkage: %d command(s) acknowledged by the broker", len(acked))
        if len(acked) < len(rows):
            raise _Unacknowledged(f"{len(rows) - len(acked)} command(s) not acknowledged yet")
        return len(rows) == SEND_BATCH
