"""Live alarm changes: one LISTEN connection per API process, fanned out to SSE clients.

Ingest (and the API itself) insert into alarm_log; a trigger NOTIFYs
'firesafe_alarms' with the log id at commit, so every API process sees
every change. Notifications only carry ids: each client then reads the rows
through its own scope and filters, in SQL. A client that falls behind, or a
LISTEN connection that had to reconnect, catches up by reading every log id
after the last one it sent.
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass, field

import psycopg

log = logging.getLogger(__name__)

CHANNEL = "firesafe_alarms"
# Ids buffered per client before it is switched to catching up from the table.
SUBSCRIBER_QUEUE = 1000
# Reconnect backoff of the LISTEN connection: doubling from 0.5 s up to 15 s, jittered.
RECONNECT_MIN_S = 0.5
RECONNECT_MAX_S = 15.0


@dataclass(eq=False, slots=True)
class Subscription:
    """One client's inbox: notified log ids, or a request to catch up."""

    queue: asyncio.Queue[int] = field(default_factory=lambda: asyncio.Queue(SUBSCRIBER_QUEUE))
    resync: bool = False
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    def push(self, log_id: int) -> None:
        try:
            self.queue.put_nowait(log_id)
        except asyncio.QueueFull:
            self.resync = True
        self.wake.set()

    def request_resync(self) -> None:
        self.resync = True
        self.wake.set()

    def drain(self) -> list[int]:
        ids = []
        while not self.queue.empty():
            ids.append(self.queue.get_nowait())
        self.wake.clear()
        return ids


class AlarmHub:
    def __init__(self, conninfo: str, *, logger: logging.Logger | None = None) -> None:
        self._conninfo = conninfo
        self._subs: set[Subscription] = set()
        self._log = logger or log
        self.listening = asyncio.Event()

    def subscribe(self) -> Subscription:
        sub = Subscription()
        self._subs.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subs.discard(sub)

    async def run(self) -> None:
        """LISTEN until cancelled, reconnecting with jittered backoff."""
        delay = RECONNECT_MIN_S
        first = True
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self._conninfo, autocommit=True
                ) as conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    self.listening.set()
                    if not first:
                        # Changes made while we were not listening: catch up.
                        for sub in self._subs:
                            sub.request_resync()
                    first = False
                    delay = RECONNECT_MIN_S
                    async for notify in conn.notifies():
                        try:
                            log_id = int(notify.payload)
                        except ValueError:
                            self._log.warning("ignoring notification %r", notify.payload)
                            continue
                        for sub in self._subs:
                            sub.push(log_id)
            except psycopg.OperationalError as exc:
                self.listening.clear()
                self._log.warning(
                    "alarm LISTEN connection lost (%s); retrying in %.1fs", exc, delay
                )
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, RECONNECT_MAX_S)
