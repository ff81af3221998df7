"""Which shards this process holds, the leases behind them, and their MQTT sessions.

Two modes, one mechanism:

- sharded (`firesafe ingest`): the process takes free shards up to its share
  (ceil(S / live processes)), hands surplus over gracefully when another
  process joins, and runs one persistent MQTT session per shard, subscribed to
  that shard's sites;
- single (`firesafe up`): the process holds every shard and one session
  subscribed to everything, so a message for a site nobody registered still
  reaches ingest and becomes a reject.

Leases are session-level advisory locks on the writer connection (see
storage/shards.py): every batch commits through the session that holds its
shard, so a batch can never commit for a shard whose lock is gone. When that
session is lost the process stops all its sessions at once (nothing is read
that cannot be committed), and on reconnection takes back exactly the shards
it had, or starts over (`ShardLost`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import Any

import psycopg

from firesafe.settings import Settings
from ingest import shards
from ingest.decode import RawMessage
from ingest.mqtt import MqttSource, can_connect
from ingest.shards import ShardLost
from storage import shards as leases
from storage.errors import MigrationError
from storage.liveness import noticing

log = logging.getLogger(__name__)

SINGLE = -1  # the key of the one session of single mode
DISCONNECT_TIMEOUT_S = 5.0
# Taking back all shards in single mode: how long to wait between attempts
# when another process holds some of them.
SINGLE_RETRY_S = 2.0
# A process holding no subscribed session probes the broker before it takes
# shards, at most this often.
BROKER_PROBE_S = 10.0
# A shard session lost is reconnected only once the database says our lease
# still holds (a process cut off from its database must not take back the
# session of a shard a peer took over); no answer in this long: ask again later.
LEASE_CHECK_S = 5.0
HELD_VIEW_S = 1.0  # one view of the leases serves every session asking meanwhile


class Ownership:
    def __init__(
        self,
        settings: Settings,
        deliver: Callable[[RawMessage], None],
        *,
        sharded: bool,
    ) -> None:
        self.settings = settings
        self.deliver = deliver
        self.sharded = sharded
        self.count = settings.shards or 1  # the database's recorded number, once joined
        self.owned: set[int] = set()
        self.releasing: set[int] = set()
        self.sources: dict[int, MqttSource] = {}
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._group: asyncio.TaskGroup | None = None
        self._paused = False
        self.writer_pid = 0
        self._session: tuple[int, Any] | None = None  # the writer session holding our leases
        self.takeovers = 0  # shards taken since start (a process's share of failovers)
        self.members: list[int] = []  # live ingest processes' writer pids (last round's view)
        # Counted among them (sharded: only while it can reach the broker).
        self.member = False
        self._broker_checked: tuple[float, bool] = (-1e9, False)  # (when, reachable)
        self._held_view: tuple[float, frozenset[int]] | None = None  # (when, shards held)
        self._asking: asyncio.Future[frozenset[int]] | None = None

    # --------------------------------------------------------------- sites
    def shard_of(self, site: str) -> int:
        return shards.shard_of(site, self.count)

    def owns(self, site: str) -> bool:
        return not self.sharded or self.shard_of(site) in self.owned

    def owned_sites(self, sites: Collection[str]) -> set[str]:
        return {s for s in sites if self.owns(s)}

    # ------------------------------------------------------------ sessions
    def bind(self, group: asyncio.TaskGroup | None) -> None:
        """Session tasks run in the service's task group (None: it has ended)."""
        self._group = group

    @property
    def bound(self) -> bool:
        return self._group is not None

    def start_session(self, shard: int, subscriptions: Sequence[str]) -> None:
        assert self._group is not None
        base = self.settings.mqtt_client_id
        source = MqttSource(
            self.settings.mqtt,
            base if shard == SINGLE else shards.client_id(base, shard),
            self.deliver,
            subscriptions=subscriptions,
            shard=shard,
            still_ours=None if shard == SINGLE else lambda: self.still_holds(shard),
        )
        if self._paused:
            source.pause()
        self.sources[shard] = source
        name = "ingest-mqtt" if shard == SINGLE else f"ingest-mqtt-s{shard}"
        self._tasks[shard] = self._group.create_task(source.run(), name=name)

    def start_sessions(self, subscriptions_of: Callable[[int], Sequence[str]]) -> None:
        """A session for every shard held (single mode: the one session)."""
        for key in [SINGLE] if not self.sharded else sorted(self.owned):
            if key not in self.sources:
                self.start_session(key, subscriptions_of(key))

    async def stop_session(self, shard: int) -> None:
        source = self.sources.pop(shard, None)
        task = self._tasks.pop(shard, None)
        if source is not None:
            try:
                await asyncio.wait_for(source.stop(), DISCONNECT_TIMEOUT_S)
            except TimeoutError:
                log.warning("MQTT disconnect of %s timed out", source.client_id)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def stop_sessions(self) -> None:
        await asyncio.gather(*(self.stop_session(k) for k in list(self.sources)))

    def pause(self) -> None:
        self._paused = True
        for source in self.sources.values():
            source.pause()

    def resume(self) -> None:
        self._paused = False
        for key, source in self.sources.items():
            if key not in self.releasing:
                source.resume()

    @property
    def subscribed(self) -> bool:
        """Every session held is connected and subscribed."""
        return bool(self.sources) and all(s.subscribed for s in self.sources.values())

    @property
    def connected(self) -> bool:
        """No session held is away from the broker (a process with one shard's
        session down misses that shard's devices: /health says so)."""
        return all(s.subscribed for s in self.sources.values())

    def deaf(self, after_s: float) -> list[int]:
        """Shards held whose broker session has been away for `after_s` or more."""
        now = time.monotonic()
        return sorted(
            k
            for k, s in self.sources.items()
            if k != SINGLE and s.away_since is not None and now - s.away_since >= after_s
        )

    async def still_holds(self, shard: int) -> bool | None:
        """Whether our writer session still holds this shard's lease (a session
        lost is reconnected only then), from one view of the leases shared by
        every session asking within HELD_VIEW_S, read on a connection of its
        own (the writer may be in a batch); None when the database does not
        answer within LEASE_CHECK_S."""
        seen = self._held_view
        if seen is not None and time.monotonic() - seen[0] < HELD_VIEW_S:
            return shard in seen[1]
        if self._asking is None or self._asking.done():
            self._asking = asyncio.ensure_future(self._read_held())
            # (its error is read here even when every session stopped waiting)
            self._asking.add_done_callback(lambda f: f.cancelled() or f.exception())
        asking = self._asking
        done, _ = await asyncio.wait([asking], timeout=LEASE_CHECK_S)
        if not done or asking.cancelled() or asking.exception() is not None:
            return None  # (a connect that hangs ends at its own timeout)
        held = asking.result()
        self._held_view = (time.monotonic(), held)
        return shard in held

    async def _read_held(self) -> frozenset[int]:
        dsn = noticing(self.settings.require_database_url())
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            view = await leases.view(conn)
        return frozenset(k for k, pid in view.owners.items() if pid == self.writer_pid)

    async def broker_reachable(self) -> bool:
        """A session of ours is subscribed, or a probe connection is accepted
        (checked at most every BROKER_PROBE_S)."""
        if any(s.subscribed for s in self.sources.values()):
            return True
        checked_at, ok = self._broker_checked
        if time.monotonic() - checked_at >= BROKER_PROBE_S:
            ok = await self.probe_broker()
        return ok

    async def probe_broker(self) -> bool:
        """Whether the broker accepts a connection now (a probe, no cache)."""
        probe = f"{self.settings.mqtt_client_id}-probe-{self.writer_pid}"
        ok = await can_connect(self.settings.mqtt, probe)
        self._broker_checked = (time.monotonic(), ok)
        return ok

    def ack(self, burst: Sequence[RawMessage]) -> None:
        if not self.sharded:
            source = self.sources.get(SINGLE)
            if source is not None:
                source.ack(burst)
            return
        by_shard: dict[int, list[RawMessage]] = {}
        for m in burst:
            by_shard.setdefault(m.shard, []).append(m)
        for shard, messages in by_shard.items():
            source = self.sources.get(shard)
            if source is not None:
                source.ack(messages)

    def source_for(self, site: str) -> MqttSource | None:
        """The session that publishes to this site (linkage commands)."""
        return self.sources.get(self.shard_of(site) if self.sharded else SINGLE)

    def pending_sites(self, sites: Collection[str]) -> list[str] | None:
        """The sites whose linkage commands this process sends (None: all)."""
        return sorted(self.owned_sites(sites)) if self.sharded else None

    # -------------------------------------------------------------- leases
    async def join(self, writer: psycopg.AsyncConnection[Any], aux: Any) -> None:
        """A new writer session: read the shard count, count us in, and take back
        every shard held before (else ShardLost: start over)."""
        recorded = await leases.recorded_shards(aux)
        if recorded is None:
            raise MigrationError("the shard count is not recorded: run `firesafe db migrate`")
        if self.settings.shards is not None and recorded != self.settings.shards:
            raise MigrationError(
                f"FIRESAFE_SHARDS={self.settings.shards}, but this database was set up "
                f"with {recorded} shards (the count cannot change; unset it)"
            )
        self.count = recorded
        if self._session is not None:  # the server may still keep the old session
            await leases.end_session(writer, self._session)
        self._session = await leases.session_identity(writer)
        self.writer_pid = self._session[0]
        if not self.sharded or self.member:  # (sharded, a new process joins once it hears)
            await leases.join(writer)
            self.member = True
        lost = [k for k in sorted(self.owned) if not await leases.try_lock(writer, k)]
        if lost:
            raise ShardLost(f"shard(s) {lost} were taken over while the database was away")

    async def take_all(
        self,
        writer: psycopg.AsyncConnection[Any],
        pause: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        """Single mode: hold every shard (waiting while another process holds some;
        `pause` is the wait between tries, which a stop may end)."""
        while True:
            for k in range(self.count):
                if k not in self.owned and await leases.try_lock(writer, k):
                    self.owned.add(k)
            if len(self.owned) == self.count:
                return
            log.warning(
                "single mode needs all %d shards; %d are held by other ingest processes "
                "(stop them, or run this one sharded); waiting",
                self.count,
                self.count - len(self.owned),
            )
            await pause(SINGLE_RETRY_S)

    async def set_member(self, writer: psycopg.AsyncConnection[Any], member: bool) -> None:
        """Count this process among the live ones, or no longer (sharded mode)."""
        if member and not self.member:
            await leases.join(writer)
        elif not member and self.member:
            await leases.leave(writer)
        self.member = member

    async def plan(self, aux: Any) -> tuple[list[int], list[int]]:
        """(free shards to try to take, held shards to hand over) for this round."""
        view = await leases.view(aux)
        self.members = view.members
        mine = {k for k, pid in view.owners.items() if pid == self.writer_pid}
        gone = self.owned - mine
        if gone:  # cannot happen while our session lives: never work on without a lock
            raise ShardLost(f"shard(s) {sorted(gone)} are no longer locked by this process")
        if not self.member:
            return [], []
        free = set(range(self.count)) - view.owners.keys()
        holding = self.owned - self.releasing
        # Shares among the members only: a process that cannot reach the broker
        # (not a member) counts for nothing, whatever it still holds.
        held = {pid: 0 for pid in view.members}
        for pid in view.owners.values():
            if pid in held:
                held[pid] += 1
        return shards.balance(holding, free, self.count, held, self.writer_pid)

    async def try_take(self, writer: psycopg.AsyncConnection[Any], shard: int) -> bool:
        if not await leases.try_lock(writer, shard):
            return False  # another process was quicker
        self.owned.add(shard)
        self.takeovers += 1
        return True

    async def release(self, writer: psycopg.AsyncConnection[Any], shard: int) -> None:
        """Hand a drained shard over: session closed first, then the lock freed."""
        await self.stop_session(shard)
        self.owned.discard(shard)
        self.releasing.discard(shard)
        await leases.unlock(writer, shard)
