"""The ingest service: MQTT in, one transaction per batch, acknowledgements out.

    broker --(QoS 1, persistent session)--> intake (bounded: messages and bytes)
        --> processor: decode -> plan -> write [transaction: events, telemetry
        (COPY), rejects, detection's alarms, linkage commands] -> after_commit
        (acknowledge, tracker, counters) --> command sender (outbox, QoS 1)

A message is acknowledged to the broker only after the transaction holding it
has committed, exactly once, so a crash at any point loses nothing: the broker
delivers it again and the (device, seq, ts) key stores it once. Only the write
is retried (`ingest/pipeline.py`); a message the database cannot store is
isolated by bisection, kept as a reject and acknowledged. Every task is named
and runs in one TaskGroup; shutdown stops intake, drains what was received,
acknowledges it and disconnects, within a bounded time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import chain
from typing import Any

import numpy as np
import psycopg
from numpy.typing import NDArray

from detection import AlarmChange, Engine, Events, Readings
from firesafe.contract import EVENT_TYPES, MAX_PAYLOAD_BYTES, READING_INDEX
from firesafe.settings import Settings
from ingest import gateway_rejects
from ingest.commands import PUBACK_TIMEOUT_S, CommandSender
from ingest.database_link import (
    APPLICATION_NAME,
    CONNECTION_ERRORS,
    DB_RETRY_MAX_S,
    DB_RETRY_MIN_S,
    DatabaseLink,
    StopRequested,
)
from ingest.decode import DecodedBatch, Decoder, RawMessage
from ingest.device_facts import DeviceFacts
from ingest.floods import Group, SiteChange
from ingest.held import HeldMarks
from ingest.housekeeping import run_housekeeping
from ingest.linkage import Building, commands_for
from ingest.mqtt import MqttSource
from ingest.ownership import SINGLE, Ownership
from ingest.pipeline import BatchPlan, per_device_steps, plan_batch
from ingest.registry import Device, Registry, ZoneIds, device_from_row
from ingest.registry_watch import watch_registry
from ingest.retained_rejects import RetainedRejects
from ingest.shard_runtime import ShardRuntime
from ingest.shards import ShardLost
from ingest.silence import Silence
from ingest.stats import Counters, now_ms, write_stats
from ingest.tracker import UNKNOWN_TS, DeviceTracker
from ingest.warm_up import warm_up
from storage import ingest_store as store
from storage.errors import MigrationError
from storage.liveness import cancel_hung, cancelled_promptly, noticing
from storage.telemetry_copy import DeviceIdTable

log = logging.getLogger(__name__)

# Batching. Under load a batch grows by itself while the previous one commits;
# these only bound it: the size keeps one transaction short (tens of ms, well
# inside the broker's in-flight window of 65535), the age bounds how long a
# quiet reading waits for company. Events and status changes never wait.
BATCH_MAX_MESSAGES = 10_000
# Gateway batches carry many readings per message: bound a batch by payload
# bytes too (~40,000 readings), so one transaction never grows huge.
BATCH_MAX_BYTES = 4 * 1024 * 1024
BATCH_MAX_AGE_S = 0.02
# Intake bound: past the high-water mark ingest stops reading the socket and
# the broker holds the rest (QoS 1, persistent session); nothing is dropped.
# Two batches' worth keeps the next batch ready while one commits, and stops
# the reader from taking the CPU the writer needs.
INTAKE_HIGH_WATER = 2 * BATCH_MAX_MESSAGES
INTAKE_LOW_WATER = BATCH_MAX_MESSAGES
# ... and in bytes, so that large payloads cannot grow memory without bound.
INTAKE_HIGH_WATER_BYTES = 4 * BATCH_MAX_BYTES
INTAKE_LOW_WATER_BYTES = 2 * BATCH_MAX_BYTES
# A payload over the contract's limit is a reject: keep only its head (and its
# length) from the moment it arrives.
OVERSIZE_KEEP_BYTES = 4096
TICK_S = 1.0  # supervision resolution: offline is raised within ~1 s of its time
# Silence is judged only while ingest keeps up: when the oldest waiting message
# is older than this, the broker may hold what devices sent (backpressure, a
# takeover's backlog), and a device would be called offline while it reports.
SUPERVISE_MAX_LAG_MS = 2_000
STATS_EVERY_S = 5.0  # ingest_stats rows for Grafana and /health
STATE_EVERY_S = 5.0  # device_state is a summary; folding it per batch would double writes
REGISTRY_EVERY_S = 2.0  # registry and person-cleared alarms poll
LEASE_EVERY_S = 1.0  # shard sharing round: a dead process's shards are taken within ~1-2 s
# On-demand refresh when a batch names an unknown device, at most this often:
# a device registered a moment ago must not be rejected, and a flood of
# unknown ids costs one cheap version query per batch at most.
REGISTRY_MIN_GAP_S = 0.05
DRAIN_TIMEOUT_S = 10.0
# Rows of one device per detection step of a batch (about 0.3-2 ms each on a
# core): a backlog of more is detected in parts (`per_device_steps`).
DETECT_STEP_PER_DEVICE = 1_000
# Stopping, a database that has committed nothing this long does not answer:
# what was received is left to the broker (it was not acknowledged).
DRAIN_STALL_S = 3.0
DRAIN_IDLE_S = 1.0  # ... and with nothing received left to commit
DISCONNECT_TIMEOUT_S = 5.0

_MAINS = READING_INDEX["mains"]
_URGENT_SUFFIXES = ("/event", "/status")


class PoisonBatch(Exception):
    """The database (or processing) refused something in this batch's rows."""


class IngestService:
    def __init__(self, settings: Settings, *, instance: str | None = None) -> None:
        self.settings = settings
        self.dsn = noticing(settings.require_database_url())  # (storage/liveness.py)
        self.instance = instance or f"{socket.gethostname()}:{os.getpid()}"
        self.intake: list[RawMessage] = []
        self._commits = 0  # batches committed (a drain that stalls is given up)
        self._taken: Sequence[RawMessage] = ()  # out of the intake, not yet being committed
        self._reported_connected: bool | None = None  # broker state in the last stats row
        self._wake = asyncio.Event()
        self._urgent = False
        self._stopping = asyncio.Event()
        self._intake_bytes = 0
        self.sharded = settings.ingest_mode == "sharded"
        self.ownership = Ownership(settings, self._deliver, sharded=self.sharded)
        self.shards = ShardRuntime(self.ownership, sharded=self.sharded)
        self.commands = CommandSender(
            self.ownership.source_for,
            self.dsn,
            lambda: self.ownership.pending_sites(self.registry.sites),
            application_name=APPLICATION_NAME,
        )
        self.engine = Engine()
        self.tracker = DeviceTracker()
        self.zone_ids = ZoneIds()
        self.registry = Registry([], self.zone_ids)
        self.silence = Silence(self.registry)  # offline supervision, floods grouped
        self.decoder = Decoder(self.registry)
        self._retained_rejects = RetainedRejects()  # kept once, not at each resubscription
        self.counters = Counters()
        self.ready = asyncio.Event()
        self.db = DatabaseLink(self.dsn, self._stopping)  # writer and auxiliary connections
        self._registry_version: tuple[int, datetime | None] = (-1, None)
        self._registry_checked = 0.0
        self._registry_now = False  # a notification asked for a registry poll
        self._listened = False  # supervision has heard the broker since the start
        self._clear_log_id = 0
        # Buildings whose signs the registry changed (added, moved, re-routed):
        # brought in line at the next poll (a sign added to a burning building).
        self._linkage_due: set[Building] = set()
        self._watermark = 0
        self._started_ms = now_ms()
        # When supervision of each slot (re)started: start-up, or its shard's takeover.
        self._since = np.zeros(0, np.int64)
        self._configured = np.zeros(0, np.int64)  # the slots detection and supervision cover
        self.facts = DeviceFacts()
        self.held = HeldMarks()
        self._flavour: store.Flavour = "plain"
        self._ids: tuple[Registry | None, DeviceIdTable] = (None, DeviceIdTable.build([]))
        # Devices moved to another place (site, building, floor or zone): where
        # each was, and the newest event time it had sent from there. What it
        # sent before, judged after the move, is the old place's alarm.
        self._moved_from: dict[int, tuple[Device, int]] = {}
        # Verdicts of devices moved to a site another process holds, judged here
        # with what they had sent; written at the next registry poll until done.
        self._let_go: list[store.AlarmWrite] = []

    # ------------------------------------------------------------- intake
    def _deliver(self, message: RawMessage) -> None:
        if len(message.payload) > MAX_PAYLOAD_BYTES:
            message = message._replace(
                payload=message.payload[:OVERSIZE_KEEP_BYTES], size=len(message.payload)
            )
        self.intake.append(message)
        self._intake_bytes += len(message.payload)
        if message.topic.endswith(_URGENT_SUFFIXES):
            self._urgent = True
        if len(self.intake) >= INTAKE_HIGH_WATER or self._intake_bytes >= INTAKE_HIGH_WATER_BYTES:
            self.ownership.pause()
        if not self._wake.is_set():
            self._wake.set()

    @property
    def queue_depth(self) -> int:
        return len(self.intake)

    @property
    def source(self) -> MqttSource:
        """The one MQTT session of single mode."""
        return self.ownership.sources[SINGLE]

    @property
    def subscribed(self) -> bool:
        """Every session this process holds is connected and subscribed."""
        return self.ownership.subscribed or (self.sharded and not self.ownership.owned)

    def request_stop(self) -> None:
        self._stopping.set()

    def _registry_changed(self) -> None:
        """The registry changed (a notification): poll it now, not at the next round."""
        self._registry_now = True
        self._wake.set()

    # ------------------------------------------------------------ running
    async def run(self) -> None:
        """Run until `request_stop()`; then drain, acknowledge and close in order.
        Losing a shard's lease (the database session that held it) starts over."""
        while True:
            stopped = False
            try:
                await self._run_once()
                return
            except* ShardLost as lost:
                log.warning("%s: dropping every shard and starting over", lost.exceptions[0])
            except* StopRequested:
                log.info("stopped while waiting (for the database, or for shards)")
                stopped = True
            if stopped:
                return
            await self._start_over()
            if self._stopping.is_set():
                return
            await asyncio.sleep(DB_RETRY_MIN_S * random.uniform(0.5, 1.0))

    async def _run_once(self) -> None:
        await self._open_database()
        try:
            if not self.sharded:
                assert self.db.writer is not None
                # (a stop while other processes hold shards: an outside check)
                await self.ownership.take_all(self.db.writer, self.db.wait_unless_stopping)
            await self._with_database(self._load_state)
            async with asyncio.TaskGroup() as tasks:
                self.ownership.bind(tasks)
                self.ownership.start_sessions(self.shards.subscriptions)
                processor = tasks.create_task(self._process_loop(), name="ingest-processor")
                # The chores wait on the database on connections of their own: a
                # failed processor (the database lost, a stop meanwhile) ends them
                # at once, never after psycopg's polite 10 s cancel.
                housekeeping = tasks.create_task(
                    cancelled_promptly(
                        run_housekeeping(self.settings, self._flavour, APPLICATION_NAME)
                    ),
                    name="ingest-housekeeping",
                )
                sender = tasks.create_task(
                    cancelled_promptly(self.commands.run()), name="ingest-commands"
                )
                watch = tasks.create_task(
                    cancelled_promptly(
                        watch_registry(self.dsn, self._registry_changed, APPLICATION_NAME)
                    ),
                    name="ingest-registry-watch",
                )
                self.ready.set()
                stopping = tasks.create_task(self._stopping.wait(), name="ingest-stop")
                await asyncio.wait([stopping, processor], return_when=asyncio.FIRST_COMPLETED)
                if not self._stopping.is_set():  # the processor failed: the group raises it
                    stopping.cancel()
                    return
                # 1. stop intake, 2. drain what was received, 3. disconnect.
                self.ownership.pause()
                drained = await self._drain(processor)
                self.commands.stop()
                if drained:
                    try:
                        await asyncio.wait_for(sender, PUBACK_TIMEOUT_S + 1)
                    except TimeoutError:
                        log.warning("linkage sender did not finish; its commands stay pending")
                else:
                    # The database is away: what was not committed is not acknowledged
                    # either, and the broker delivers it again to the next run. Its
                    # connections are closed before the cancel: psycopg would first
                    # ask a server that does not answer to cancel the query (10 s).
                    log.warning(
                        "drain did not finish (the database committed nothing for %.0f s); "
                        "%d message(s) left to the broker",
                        DRAIN_STALL_S if self.intake or self._taken else DRAIN_IDLE_S,
                        self.queue_depth,
                    )
                    await self._close_database()
                    await self.commands.abandon()
                    await cancel_hung([processor, sender])
                # The chores may be in a query the database will never answer
                # (an outside check: 8-13 s more to stop).
                await cancel_hung([housekeeping, watch])
                await self.ownership.stop_sessions()
        finally:
            self.ownership.bind(None)
            await self._close_database()

    async def _start_over(self) -> None:
        """After a lost lease: nothing held, nothing known; the broker redelivers
        what was not acknowledged to whoever owns each shard now."""
        await self.ownership.stop_sessions()
        self.ownership.owned.clear()
        self.ownership.releasing.clear()
        self.intake.clear()
        self._intake_bytes = 0
        self.engine = Engine()
        self.tracker = DeviceTracker()
        self.silence = Silence(self.registry)
        self._configured = np.zeros(0, np.int64)
        self._registry_version = (-1, None)
        self.ready.clear()

    async def _open_database(self) -> None:
        """Connect (waiting out an outage of any length) and join. A database that
        answers but is not migrated is a configuration error."""
        await self.db.open(self._join)

    async def _close_database(self) -> None:
        await self.db.close()

    async def _join(self) -> None:
        """On new connections: read the schema flavour, prepare the writer, and
        take back the leases held (they live in the writer's session)."""
        assert self.db.writer is not None
        assert self.db.aux is not None
        flavour = await store.recorded_flavour(self.db.aux)
        if flavour is None:
            raise MigrationError("database is not migrated: run `firesafe db migrate`")
        self._flavour = flavour
        await store.prepare_connection(self.db.writer)
        await self.ownership.join(self.db.writer, self.db.aux)

    async def _drain(self, processor: asyncio.Task[None]) -> bool:
        """Wait for the processor to commit what was received; False once the
        database has committed nothing for DRAIN_STALL_S (a server that hangs;
        DRAIN_IDLE_S when nothing received is left)
        or after DRAIN_TIMEOUT_S in all."""
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        commits, since = self._commits, time.monotonic()
        while True:
            done, _ = await asyncio.wait([processor], timeout=0.25)
            if done:
                return True
            now = time.monotonic()
            if self._commits != commits:
                commits, since = self._commits, now
            # With nothing received left, only bookkeeping can still be under
            # way: milliseconds when the database answers.
            stall = DRAIN_STALL_S if self.intake or self._taken else DRAIN_IDLE_S
            if now - since >= stall or now >= deadline:
                return False

    async def _load_state(self) -> None:
        """Restore detection, supervision and linkage from the database (start-up).
        Sharded, a process starts with no shard: each is restored when taken."""
        assert self.db.aux is not None
        self.engine = Engine()
        self.silence = Silence(self.registry)
        self.tracker = DeviceTracker()
        self._configured = np.zeros(0, np.int64)
        self.facts.reset()
        self.held = HeldMarks()
        self._clear_log_id = await store.last_log_id(self.db.aux)
        await self._refresh_registry(force=True)
        if self.sharded:
            return
        await self._restore(None)

    async def _restore(self, sites: Collection[str] | None) -> None:
        """What the database knows of these sites' devices (None: all): device state,
        open alarms, and the signs brought in line with the open fires."""
        assert self.db.aux is not None
        assert self.db.writer is not None
        only = None if sites is None else sorted(sites)
        state = await store.load_device_state(self.db.aux, only)
        self.tracker.load(state)
        self.held.load(state)
        stored = [r for r in state if r["drift_baseline"] is not None]
        self.engine.restore_baselines(
            [int(r["slot"]) for r in stored], [float(r["drift_baseline"]) for r in stored]
        )
        group_alarms = await store.load_open_site_alarms(self.db.aux)
        group_alarms = {k: v for k, v in group_alarms.items() if sites is None or k[0] in sites}
        open_alarms = await store.load_open_alarms(self.db.aux, only)
        restored = self._configured
        if sites is not None:  # (the shards held before go on undisturbed)
            restored = np.intersect1d(restored, self.registry.slots_of_sites(sites))
        await warm_up(
            self.db.aux,
            self.engine,
            self.registry,
            restored,
            open_alarms,
            self.held.stored,
            self.tracker.last_seen,
        )
        offline = []
        for row in open_alarms:
            slot = int(row["slot"])
            if row["type"] == "offline":
                offline.append((slot, row["site_id"], int(row["opened_ms"])))
                continue
            self.engine.restore_alarm(
                slot, row["type"], row["verdict"], int(row["opened_ms"]), row["reason"]
            )
        members = await store.load_gateway_members(self.db.aux, only)
        self.silence.restore(group_alarms, offline, members)
        # Every sign shows what the open fires want, whatever was (or was not)
        # sent before: recompute and write what differs.
        async with self.db.writer.transaction():
            written = await self._write_commands(
                self.db.writer, self.registry.evac_buildings(sites)
            )
        if written:
            log.info("linkage: %d command(s) to bring signs in line", written)
        in_line = None if sites is None else set(sites)  # (their signs are, now)
        self._linkage_due = {
            b for b in self._linkage_due if in_line is not None and b[0] not in in_line
        }
        self.commands.wake()

    async def _refresh_registry(self, *, force: bool = False) -> bool:
        """Reload the registry if it changed; True when it did."""
        assert self.db.aux is not None
        self._registry_checked = time.monotonic()
        version = await store.registry_version(self.db.aux)
        if version == self._registry_version and not force:
            return False
        rows = await store.load_registry(self.db.aux)
        self._registry_version = version
        registry = Registry((device_from_row(row) for row in rows), self.zone_ids)
        self._note_moves(self.registry, registry)
        self._linkage_due.update(registry.evac_changed(self.registry))
        self.registry = registry
        self.decoder = Decoder(registry)
        self.tracker.ensure(registry.size)
        self.shards.map_sites(registry.sites)
        self._let_go_moved_away()
        self._configure_owned()
        log.info("registry: %d devices", len(registry))
        return True

    def _note_moves(self, old: Registry, new: Registry) -> None:
        for device in new.by_id.values():
            before = old.by_slot[device.slot] if device.slot < old.size else None
            if before is None or before.id != device.id or before.zone_key == device.zone_key:
                continue
            newest = UNKNOWN_TS
            if device.slot < self.tracker.size:
                newest = int(self.tracker.newest_ts[device.slot])
            # Nothing committed from it by this process: what is pending came before now.
            self._moved_from[device.slot] = (before, now_ms() if newest == UNKNOWN_TS else newest)

    def _let_go_moved_away(self) -> None:
        """Devices moved to a site another process holds leave this one's detection
        (`_configure_owned` forgets them): their open windows are first ended at
        their newest reading and judged with what they had sent, where they were
        (`Engine.let_go`). The new holder starts them afresh; forgotten, a pending
        fire of the old site stayed pending for good (an outside check's move in
        sharded mode)."""
        held = self.shards.held_sites()
        if held is None:
            return
        leaving = [
            slot
            for slot in self._configured.tolist()
            if slot in self._moved_from
            and slot < self.registry.size
            and (device := self.registry.by_slot[slot]) is not None
            and device.site not in held
        ]
        if not leaving:
            return
        for change in self.engine.let_go(leaving):
            moved = self._moved_from.get(change.slot)  # (a zone partner may stay)
            place = moved[0] if moved is not None else None
            self._let_go.append(self._alarm_write(change, place=place))

    def _configure_owned(self) -> None:
        """Detection and supervision cover exactly the devices of the shards held."""
        registry = self.registry
        held = self.shards.held_sites()
        slots = registry.slots if held is None else registry.slots_of_sites(held)
        stale = np.setdiff1d(self._configured, slots)
        if stale.size:  # a device moved away, or was deleted
            self._forget(stale)
        if self._since.size < registry.size:
            grown = np.full(registry.size, self._started_ms, np.int64)
            grown[: self._since.size] = self._since
            self._since = grown
        # Supervised from now on (a device moved here from another process's
        # site was heard there, not here: a recheck saw it raised offline at
        # once, dated before the move).
        fresh = np.setdiff1d(slots, self._configured)
        self._since[fresh] = np.maximum(self._since[fresh], now_ms())
        self.engine.configure(
            *registry.detection_config(slots), intervals_ms=registry.interval_ms[slots]
        )
        baseline = np.maximum(registry.registered_ms, self._since[: registry.size])
        baseline = np.maximum(baseline, self.tracker.last_seen[: registry.size])
        self.silence.configure(registry, slots, baseline)
        self._configured = slots

    def _forget(self, slots: NDArray[np.int64]) -> None:
        for slot in slots.tolist():
            self._moved_from.pop(slot, None)
        self.engine.forget(slots)
        self.held.forget(slots)
        self.tracker.forget(slots)
        self.silence.forget(slots)

    # ------------------------------------------- shards (the ShardHost side)
    def holds_messages_of(self, shard: int) -> bool:
        """Messages of the shard received and not yet committed (acknowledged)."""
        return any(m.shard == shard for m in chain(self._taken, self.intake))

    def drop_sites(self, sites: set[str]) -> None:
        self.silence.forget_sites(sites)
        self._configure_owned()

    async def adopt_sites(self, sites: set[str]) -> None:
        # A report first: a long restore must not look like a stalled process
        # (shard_runtime.STALLED_AFTER_S counts from the last report).
        await self._write_stats()
        slots = self.registry.slots_of_sites(sites)
        self._forget(slots)
        self.silence.forget_sites(sites)
        self._since[slots] = now_ms()
        self._configure_owned()
        await self._restore(sites)
        log.info("adopted %d site(s), %d device(s)", len(sites), slots.size)

    async def _balance(self) -> None:
        assert self.db.writer is not None
        await self.shards.balance(self, self.db.writer, self.db.aux)

    # ---------------------------------------------------------- processor
    async def _process_loop(self) -> None:
        """Batches in order, one transaction at a time on the writer. The next
        batch is decoded while PostgreSQL works through the rows of the one
        before, and bookkeeping runs between commits, after that decode, so
        that it never leaves the server idle."""
        due = _Timetable.starting(time.monotonic())
        committing: asyncio.Task[None] | None = None
        try:
            while not (self._stopping.is_set() and not self.intake):
                if not self._stopping.is_set():
                    await self._wait_for_batch(due.tick)
                burst = self._take_batch() if self.intake else None
                batch = await self._decode(burst) if burst else None
                if committing is not None:
                    await committing
                    committing = None
                # Bookkeeping sees this batch as waiting, like the intake: its devices
                # are not silent, and its shard cannot be handed over before it commits.
                self._taken = burst or ()
                try:
                    await self._bookkeeping(due)
                finally:
                    self._taken = ()
                if burst and batch is not None:
                    rows_sent = asyncio.Event()
                    committing = asyncio.create_task(
                        self._commit(burst, batch, rows_sent), name="ingest-commit"
                    )
                    await _first_of(committing, rows_sent)
        finally:
            if committing is not None:
                await committing
        await self._flush_detection()
        await self._bookkeeping(due)  # stopping: device state and stats, last time

    async def _bookkeeping(self, due: _Timetable) -> None:
        """The periodic steps that are due, on the writer between two commits."""
        stopping = self._stopping.is_set()
        mono = time.monotonic()
        if (mono >= due.registry or self._registry_now) and not stopping:
            due.registry = mono + REGISTRY_EVERY_S
            self._registry_now = False
            await self._with_database(self._poll_changes)
        if mono >= due.tick:
            due.tick = mono + TICK_S
            await self._supervise()
        if mono >= due.state or stopping:
            due.state = mono + STATE_EVERY_S
            await self._with_database(self.flush_device_state)
        # A broker session lost or back is reported at once (/health), not
        # at the next regular row.
        changed = self.ownership.connected != self._reported_connected
        if mono >= due.stats or stopping or changed:
            due.stats = mono + STATS_EVERY_S
            await self._with_database(self._write_stats)
        if self.sharded and mono >= due.lease and not stopping:
            due.lease = mono + LEASE_EVERY_S
            await self._with_database(self._balance)

    def _take_batch(self) -> list[RawMessage]:
        """The oldest messages, up to BATCH_MAX_MESSAGES or BATCH_MAX_BYTES; below
        the low-water mark the broker may send again."""
        count, size = 0, 0
        for message in self.intake[:BATCH_MAX_MESSAGES]:
            count += 1
            size += len(message.payload)
            if size >= BATCH_MAX_BYTES:
                break
        burst = self.intake[:count]
        del self.intake[:count]
        self._intake_bytes -= size
        self._urgent = any(m.topic.endswith(_URGENT_SUFFIXES) for m in self.intake)
        if (
            len(self.intake) <= INTAKE_LOW_WATER
            and self._intake_bytes <= INTAKE_LOW_WATER_BYTES
            and not self._stopping.is_set()
        ):
            self.ownership.resume()
        return burst

    async def _wait_for_batch(self, next_tick: float) -> None:
        """Until a batch is due (size, age or urgency), a tick is due, or stop."""
        deadline = next_tick
        while not self._stopping.is_set() and not self._registry_now:
            if self.intake:
                if self._urgent or len(self.intake) >= BATCH_MAX_MESSAGES:
                    return
                oldest_age = time.time() - self.intake[0].received_ms / 1000
                if oldest_age >= BATCH_MAX_AGE_S:
                    return
                deadline = min(deadline, time.monotonic() + BATCH_MAX_AGE_S - oldest_age)
            timeout = deadline - time.monotonic()
            if timeout <= 0:
                return
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    async def _with_database(self, step: Any, *args: Any) -> None:
        """Run a database step; on a lost connection, reconnect and run it again.
        Steps are idempotent writes: what they decide is decided before the call."""
        delay = DB_RETRY_MIN_S
        while True:
            try:
                await self.db.answered(step, *args)
                return
            except CONNECTION_ERRORS as exc:
                if self._stopping.is_set() and step != self._write:
                    return  # bookkeeping is not worth waiting for; batches are
                log.warning("database error (%s); retrying in %.1f s", exc, delay)
                # Read nothing that cannot be committed, and never hold a shard's
                # broker session while its lease may be gone.
                await self.ownership.stop_sessions()
                # Devices go on reporting into the broker meanwhile: ingest's outage
                # is not theirs, so supervision gets the time back once it hears.
                self.silence.supervisor.hearing(False, now_ms())
                await self.db.wait_unless_stopping(delay * random.uniform(0.5, 1.0))  # jitter
                delay = min(DB_RETRY_MAX_S, delay * 2)
                with contextlib.suppress(psycopg.Error):
                    await self.db.reopen(self._join)
                    if self.ownership.bound:
                        self.ownership.start_sessions(self.shards.subscriptions)
            except psycopg.Error as exc:
                if step == self._write:
                    raise PoisonBatch(str(exc)) from exc
                # Bookkeeping (stats, device_state, polls) must not stop the pipeline.
                log.error("%s failed: %s", getattr(step, "__name__", step), exc)
                return

    async def _decode(self, burst: Sequence[RawMessage]) -> DecodedBatch:
        batch = self.decoder.decode(burst)
        # A device registered a moment ago is not "unknown": look again first.
        if (
            any(r.reason == "unknown_device" for r in batch.rejects)
            and time.monotonic() - self._registry_checked >= REGISTRY_MIN_GAP_S
            and await self._try_refresh_registry()
        ):
            batch = self.decoder.decode(burst)
        return self._retained_rejects.drop_repeats(burst, gateway_rejects.convert(batch))

    async def _try_refresh_registry(self) -> bool:
        """A refresh that may fail (the database is away): the periodic poll retries."""
        try:
            return await self.db.answered(self._refresh_registry)
        except psycopg.Error as exc:
            log.warning("registry refresh failed (%s); keeping the current registry", exc)
            return False

    async def _commit(
        self,
        burst: Sequence[RawMessage],
        batch: DecodedBatch,
        rows_sent: asyncio.Event | None = None,
    ) -> None:
        """Plan once, write (retried on a lost connection), then after_commit once.
        A batch the database refuses is bisected down to the message it refuses.
        `rows_sent` is set once the batch's rows are on their way to the server."""
        rows_sent = rows_sent or asyncio.Event()
        try:
            plan = plan_batch(burst, batch, self.tracker.maybe_duplicate)
            try:
                await self._with_database(self._write, plan, rows_sent)
            except PoisonBatch as exc:
                log.warning("a batch of %d message(s) was refused (%s); isolating", len(burst), exc)
                await self._bisect(burst, exc)
                return
            self._after_commit(plan)
        finally:
            rows_sent.set()

    def _device_ids(self) -> DeviceIdTable:
        """Device ids by slot for the binary COPY (built once per registry snapshot)."""
        if self._ids[0] is not self.registry:
            ids = [None if d is None else d.id for d in self.registry.by_slot]
            self._ids = (self.registry, DeviceIdTable.build(ids))
        return self._ids[1]

    async def _bisect(self, burst: Sequence[RawMessage], exc: PoisonBatch) -> None:
        if len(burst) == 1:
            m = burst[0]
            reject = store.RejectRow(
                m.received_ms,
                m.topic,
                "bad_payload",
                m.payload,
                f"could not be processed: {exc}"[:500],
                None,
            )
            await self._with_database(self._write_rejects, [reject])
            self.ownership.ack(burst)
            self.counters.rejects += 1
            log.error("message on %s kept as a reject: %s", m.topic, exc)
            return
        half = len(burst) // 2
        for part in (burst[:half], burst[half:]):
            await self._commit(part, await self._decode(part))

    async def _write_rejects(self, rejects: Sequence[store.RejectRow]) -> None:
        assert self.db.writer is not None
        async with self.db.writer.transaction():
            await store.write_rejects(self.db.writer, rejects)

    async def _write(self, plan: BatchPlan, rows_sent: asyncio.Event) -> None:
        """One transaction: the batch's rows, detection's alarms, linkage commands.
        The only step that is ever retried; detection is decided on the first try."""
        writer = self.db.writer
        assert writer is not None
        registry = self.registry
        async with writer.transaction():
            try:
                async with writer.transaction():  # a savepoint: refused rows are poison
                    ev_new = await store.write_events(
                        writer,
                        device_ids=[registry.device(int(s)).id for s in plan.ev_slot],
                        slot=plan.ev_slot,
                        ts=plan.ev_ts,
                        seq=plan.ev_seq,
                        received=plan.ev_received,
                        types=[EVENT_TYPES[int(c)] for c in plan.ev_code],
                        details=[plan.batch.ev_detail[int(i)] for i in plan.ev_idx],
                    )
                    tel_new = await store.write_telemetry(
                        writer,
                        self._flavour,
                        slot=plan.slot,
                        ts=plan.ts,
                        seq=plan.seq,
                        received=plan.received,
                        maybe_dup=plan.maybe_dup,
                        values=plan.values,
                        extra=plan.extra,
                        ids=self._device_ids(),
                        on_sent=rows_sent.set,
                    )
                    await store.write_rejects(writer, plan.rejects)
            except CONNECTION_ERRORS:
                raise
            except Exception as exc:
                raise PoisonBatch(f"{type(exc).__name__}: {exc}") from exc
            if plan.alarm_writes is None:  # detection and supervision advance state once
                try:
                    changes = await self._detect(
                        plan.slot[tel_new],
                        plan.ts[tel_new],
                        plan.values[tel_new],
                        plan.ev_slot[ev_new],
                        plan.ev_ts[ev_new],
                        plan.ev_code[ev_new],
                        max(
                            int(plan.received.max(initial=0)), int(plan.ev_received.max(initial=0))
                        ),
                    )
                    writes = [self._alarm_write(c) for c in changes]
                    offline, plan.site_changes = self.silence.batch(
                        plan.batch, self.tracker.last_seen
                    )
                    writes += offline
                    plan.held_marks = self.held.to_mark(self.engine.held_from())
                except Exception as exc:
                    log.exception("detection failed on a batch")
                    raise PoisonBatch(f"detection failed: {type(exc).__name__}: {exc}") from exc
                plan.alarm_writes = writes
            applied = await self._apply_alarm_writes(writer, plan.alarm_writes)
            await self.held.write(writer, registry, plan.held_marks)
            sites = await self.silence.apply(writer, plan.site_changes)
            fires = _fire_causes(applied)
            back = self._signs_back(plan.batch, applied)
            buildings = sorted(fires.keys() | {(d.site, d.building) for d in back})
            commands = await self._write_commands(
                writer, buildings, fires, resend={d.id for d in back}
            )
        plan.tel_new, plan.ev_new, plan.applied, plan.commands = tel_new, ev_new, applied, commands
        plan.sites = sites

    def _signs_back(
        self, batch: DecodedBatch, applied: Sequence[store.AppliedAlarm]
    ) -> list[Device]:
        """Evac devices of this batch that are back: `online` on their status
        topic (not a retained one: that is the broker's memory), or their
        `offline` alarm cleared. A sign that restarted shows normal again, one
        that was away may have missed its command (an outside check: a sign
        offline when its building's fire was confirmed stayed dark)."""
        registry = self.registry
        online = batch.st_slot[batch.st_online & ~batch.st_retained]
        ids = {d.id for d in (registry.by_slot[int(s)] for s in online) if d is not None}
        ids |= {
            a.write.device_id
            for a in applied
            if a.write.alarm_type == "offline" and a.write.action == "clear"
        }
        devices = (registry.get(i) for i in sorted(ids))
        return [d for d in devices if d is not None and d.kind == "evac"]

    async def _apply_alarm_writes(
        self, conn: psycopg.AsyncConnection[Any], writes: Sequence[store.AlarmWrite]
    ) -> list[store.AppliedAlarm]:
        """Apply alarm transitions; one the database refuses is logged and skipped,
        never allowed to take the others (or the batch's data) with it."""
        if not writes:
            return []
        try:
            async with conn.transaction():
                return await store.apply_alarm_writes(conn, writes)
        except CONNECTION_ERRORS:
            raise
        except Exception as exc:
            log.error("alarm writes refused (%s); applying one by one", exc)
        applied: list[store.AppliedAlarm] = []
        for w in writes:
            try:
                async with conn.transaction():
                    applied += await store.apply_alarm_writes(conn, [w])
            except CONNECTION_ERRORS:
                raise
            except Exception as exc:
                log.error("alarm transition %s refused by the database: %s", w, exc)
        return applied

    async def _write_commands(
        self,
        conn: psycopg.AsyncConnection[Any],
        buildings: Sequence[Building],
        causes: Mapping[Building, str] | None = None,
        resend: Collection[str] = frozenset(),
    ) -> int:
        """Linkage: write (as pending) the commands that bring each sign of these
        buildings in line with the building's open confirmed fires. `causes`: the
        alarm that changed each building's state (a `normal` refers to it);
        `resend`: signs just back, told their state again (linkage.commands_for)."""
        if not buildings:
            return 0
        burning = await store.burning_zones(conn, buildings)
        signs_of = {b: self.registry.evac_devices(*b) for b in buildings}
        last = await store.last_commands(conn, [d.id for ds in signs_of.values() for d in ds])
        made_at = now_ms()
        rows: list[store.CommandRow] = []
        for building in buildings:
            zones, alarm_id = burning[building]
            if alarm_id is None and causes:
                alarm_id = causes.get(building)
            signs = signs_of[building]
            for c in commands_for(building, signs, zones, last, alarm_id, resend):
                payload: dict[str, Any] = {"ts": made_at, "cmd": c.cmd}
                if c.cmd == "emergency":
                    payload.update(alarm_id=c.alarm_id, direction=c.direction)
                rows.append(
                    store.CommandRow(
                        c.alarm_id, c.device_id, c.site, c.building, c.cmd, c.direction, payload
                    )
                )
        await store.write_commands(conn, rows)
        if rows:
            commanded = len({(r.site, r.building) for r in rows})  # (not every one looked at)
            log.info("linkage: %d command(s) written for %d building(s)", len(rows), commanded)
        return len(rows)

    def _after_commit(self, plan: BatchPlan) -> None:
        """Committed: acknowledge, fold into what we know of each device, count.
        Runs once per batch, never retried."""
        self._commits += 1
        self.ownership.ack(plan.burst)
        self.silence.applied(plan.sites)
        self.held.committed(plan.held_marks)
        if plan.commands:
            self.commands.wake()
        slot, ts, values = plan.slot, plan.ts, plan.values
        tel_new, ev_new = plan.tel_new, plan.ev_new
        all_slot = np.concatenate([slot, plan.ev_slot])
        all_new = np.concatenate([tel_new, ev_new])
        c = self.counters
        c.seq_gaps += self.tracker.committed(
            all_slot,
            np.concatenate([ts, plan.ev_ts]),
            np.concatenate([plan.seq, plan.ev_seq]),
            np.concatenate([plan.received, plan.ev_received]),
            all_new,
            events_from=slot.size,
        )
        self.tracker.duplicates_dropped(plan.dropped)
        c.duplicates += plan.in_batch_dups + int((~all_new).sum())
        batch = plan.batch
        self.tracker.seen(*self.silence.heard_in_rejects(batch))
        if batch.st_slot.size:
            live = ~batch.st_retained
            self.tracker.seen(batch.st_slot[live], batch.st_received[live])
            self.tracker.set_status(batch.st_slot, batch.st_online, batch.st_received)
        mains = values[:, _MAINS]
        has_mains = tel_new & ~np.isnan(mains)
        if has_mains.any():  # evac units only; the last value per device wins
            self.tracker.set_mains(slot[has_mains], mains[has_mains] >= 0.5)
        c.batches += 1
        c.messages += len(plan.burst)
        c.readings += batch.readings
        c.events += batch.events
        c.rejects += len(batch.rejects)
        oldest = min(m.received_ms for m in plan.burst)
        c.latencies_ms.append(now_ms() - oldest)

    async def _detect(
        self,
        slot: NDArray[np.int64],
        ts: NDArray[np.int64],
        values: NDArray[np.float64],
        ev_slot: NDArray[np.int64],
        ev_ts: NDArray[np.int64],
        ev_code: NDArray[np.int16],
        arrival_ms: int,
    ) -> list[AlarmChange]:
        """Detection on the batch; windows close on each device's own clock, and
        a device gone quiet is judged on arrival time (the batch's newest
        `received`, ingest's clock), never on other devices' event time."""
        arrival = max(arrival_ms if arrival_ms > 0 else now_ms(), self._watermark)
        self._watermark = arrival  # the arrival clock: only moves forward
        events = Events(slot=ev_slot, ts=ev_ts, code=ev_code)
        steps = per_device_steps(slot, DETECT_STEP_PER_DEVICE)
        if steps is None:
            changes = self.engine.process(
                Readings(slot=slot, ts=ts, values=values), events, arrival
            )
        else:  # a device's backlog: in parts, the loop (MQTT keepalives) served between
            changes = []
            for part in steps:
                readings = Readings(slot=slot[part], ts=ts[part], values=values[part])
                last = part is steps[-1]
                changes += self.engine.process(
                    readings, events if last else Events.empty(), arrival
                )
                if not last:
                    await asyncio.sleep(0)
        changes += self.engine.advance(arrival)
        if self.engine.stepped_back:
            ids = sorted({self.registry.device(s).id for s in self.engine.stepped_back})
            self.engine.stepped_back.clear()
            log.warning(
                "clock stepped back on %d device(s) (%s): their readings feed detection "
                "again, on their new clock; set their clocks",
                len(ids),
                ", ".join(ids[:20]),
            )
        return changes

    def _alarm_write(self, change: AlarmChange, place: Device | None = None) -> store.AlarmWrite:
        device = self.registry.device(change.slot)
        moved = self._moved_from.get(change.slot)
        # Where it happened: a change of what the device sent before a move
        # belongs to its old place (its event time is no later than the newest
        # it had sent from there).
        if place is None:
            place = moved[0] if moved is not None and change.at_ms <= moved[1] else device
        detail: dict[str, Any] = dict(change.detail)
        if change.related:
            detail["related"] = [self.registry.device(s).id for s in change.related]
        return store.AlarmWrite(
            device_id=device.id,
            site=place.site,
            building=place.building,
            floor=place.floor,
            zone=place.zone,
            alarm_type=change.alarm_type,
            action=change.action,  # type: ignore[arg-type]
            verdict=change.verdict,
            reason=change.reason,
            at_ms=change.at_ms,
            detail=detail,
        )

    async def _supervise(self) -> None:
        """Raise `offline` for devices silent past their limit. Decided once, then
        written (retried on a lost connection)."""
        # Deaf: a broker session held is down (holding none, nothing is supervised).
        listening = not self.ownership.sources or self.ownership.subscribed
        outage = self.silence.supervisor.hearing(listening, now_ms())
        if not listening:
            return  # nothing can be heard: nobody is silent, no window gone quiet
        if outage is not None:
            self.engine.credit_arrivals(*outage)
            if self._listened:  # (the first subscription is no comeback)
                # (deaf: a broker session down, or the database away, sessions or not)
                log.info("listening again after %.1f s: supervision resumes", outage[1] / 1000)
        self._listened = True
        writes: list[store.AlarmWrite] = []
        waiting = [*self._taken, *self.intake]
        if not waiting:
            # A device gone quiet mid-window is judged on the arrival clock; with
            # nothing waiting here, the clock is now (a whole estate may be silent).
            self._watermark = max(self._watermark, now_ms())
            writes += [self._alarm_write(c) for c in self.engine.advance(self._watermark)]
        now = now_ms()
        silent: list[store.AlarmWrite] = []
        sites: list[SiteChange] = []
        if not waiting or now - waiting[0].received_ms <= SUPERVISE_MAX_LAG_MS:
            self._heard(waiting)  # (not judged while ingest is not keeping up)
            silent, sites = self.silence.silent(now)
        if not silent and not writes:
            return
        done: dict[Group, str | None] = {}
        await self._with_database(self._write_alarms, [*writes, *silent], sites, done)
        self.silence.applied(done)
        if silent:
            log.info("%d device(s) went offline", len(silent))

    def _heard(self, waiting: Sequence[RawMessage]) -> None:
        """Devices whose messages arrived and wait here are not silent."""
        slots: list[int] = []
        at: list[int] = []
        for m in waiting:
            _, device, reason, _ = self.decoder.classify(m.topic)
            if device is not None and reason is None:
                slots.append(device.slot)
                at.append(m.received_ms)
        if slots:
            self.silence.supervisor.heard(np.array(slots, np.int64), np.array(at, np.int64))

    async def _flush_detection(self) -> None:
        """Stopping: readings detection still holds for its zones' order (a
        lagging neighbour) are committed, and a restart's warm-up replays only
        zones with an alarm open: their alarms are written now, not lost."""
        writes = [self._alarm_write(c) for c in self.engine.flush()]
        if writes:
            log.info("detection: %d alarm change(s) from readings held for zone order", len(writes))
            await self._with_database(self._write_alarms, writes)

    async def _write_alarms(
        self,
        writes: Sequence[store.AlarmWrite],
        sites: Sequence[SiteChange] = (),
        done: dict[Group, str | None] | None = None,
    ) -> None:
        assert self.db.writer is not None
        async with self.db.writer.transaction():
            applied = await self._apply_alarm_writes(self.db.writer, writes)
            result = await self.silence.apply(self.db.writer, sites)
            fires = _fire_causes(applied)
            commands = await self._write_commands(self.db.writer, sorted(fires), fires)
        if commands:
            self.commands.wake()
        if done is not None:
            done.update(result)

    async def _poll_changes(self) -> None:
        """Registry changes and alarms a person cleared (they may fire again).
        Idempotent: the log position advances only once linkage is written."""
        assert self.db.aux is not None
        assert self.db.writer is not None
        await self._refresh_registry()
        if self._let_go:
            await self._write_alarms(self._let_go)
            self._let_go = []
        await self._bring_changed_signs_in_line()
        rows = await store.cleared_by_people(self.db.aux, self._clear_log_id)
        if not rows:
            return
        buildings: dict[Building, str] = {}
        for row in rows:
            device = self.registry.get(row["device_id"])
            if device is None or not self.ownership.owns(device.site):
                continue
            if row["action"] != "cleared":  # an operator confirmed or dismissed it
                self.engine.operator_verdict(device.slot, row["type"], row["action"])
                if row["type"] == "fire" and row["action"] == "confirmed":
                    buildings[(row["site_id"], row["building"])] = row["id"]
                continue
            if row["type"] == "offline":
                self.silence.supervisor.reset(device.slot, now_ms())
                continue
            self.engine.clear(device.slot, row["type"])
            if row["type"] == "fire":
                buildings[(row["site_id"], row["building"])] = row["id"]
        if buildings:
            async with self.db.writer.transaction():
                written = await self._write_commands(self.db.writer, sorted(buildings), buildings)
            if written:  # after the commit: the sender must find them
                self.commands.wake()
        self._clear_log_id = max(int(row["log_id"]) for row in rows)

    async def _bring_changed_signs_in_line(self) -> None:
        """Signs the registry added, moved or re-routed show what their building's
        open fires want (an outside check: a sign registered in a burning
        building stayed dark until ingest restarted)."""
        assert self.db.writer is not None
        due = sorted(b for b in self._linkage_due if self.ownership.owns(b[0]))
        if due:
            async with self.db.writer.transaction():
                written = await self._write_commands(self.db.writer, due)
            if written:
                log.info("linkage: %d command(s) for signs the registry changed", written)
                self.commands.wake()
        self._linkage_due.clear()  # (a building of another process's shard is its business)

    async def flush_device_state(self) -> None:
        assert self.db.writer is not None
        await self.facts.flush(
            self.db.writer,
            self.registry,
            self.tracker,
            self.engine,
            self.silence.gateways,
            self.held,
        )

    async def _write_stats(self) -> None:
        assert self.db.writer is not None
        self._reported_connected = await write_stats(
            self.db.writer,
            self.counters,
            self.intake,
            self.ownership,
            instance=self.instance,
            sharded=self.sharded,
        )


def _fire_causes(applied: Sequence[store.AppliedAlarm]) -> dict[Building, str]:
    """Buildings whose fire state a batch changed, each with the last alarm that did."""
    return {
        (a.write.site, a.write.building): a.alarm_id
        for a in applied
        if a.write.alarm_type == "fire"
    }


@dataclass(slots=True)
class _Timetable:
    """When each periodic step of the process loop is next due (monotonic s)."""

    tick: float
    registry: float
    state: float
    stats: float
    lease: float

    @classmethod
    def starting(cls, now: float) -> _Timetable:
        return cls(now, now, now, now, now)


async def _first_of(task: asyncio.Task[None], event: asyncio.Event) -> None:
    """Until the task ends or the event is set. A task that was only created
    has not started yet: the caller's next synchronous work (decoding a batch
    holds the event loop) would otherwise run before a byte of it is sent."""
    waiter = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
