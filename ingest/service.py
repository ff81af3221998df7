"""The ingest service: MQTT in, one transaction per batch, acknowledgements out.

    broker --(QoS 1, persistent session)--> intake (bounded) --> processor:
        decode -> de-duplicate -> [transaction: events, telemetry (COPY), rejects,
        detection, alarms] -> commit -> acknowledge -> linkage commands

A message is acknowledged to the broker only after the transaction holding it
has committed, so a crash at any point loses nothing: the broker delivers it
again and the (device, seq, ts) key stores it once. Every task is named and
runs in one TaskGroup; shutdown stops intake, drains what was received,
acknowledges it and closes the connections in that order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson
import psycopg
from numpy.typing import NDArray

from detection import AlarmChange, Engine, Events, Readings
from firesafe.contract import EVENT_TYPES, READING_INDEX
from firesafe.settings import Settings
from ingest.decode import DecodedBatch, Decoder, RawMessage
from ingest.linkage import Building, Linkage
from ingest.mqtt import MqttSource
from ingest.registry import Registry, device_from_row
from ingest.supervision import Supervisor
from ingest.tracker import DeviceTracker
from storage import ingest_store as store
from storage import partitions
from storage.migrate import current_flavour

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
TICK_S = 1.0  # supervision resolution: offline is raised within ~1 s of its time
STATS_EVERY_S = 5.0  # ingest_stats rows for Grafana and /health
STATE_EVERY_S = 5.0  # device_state is a summary; folding it per batch would double writes
REGISTRY_EVERY_S = 2.0  # registry and person-cleared alarms poll
# On-demand refresh when a batch names an unknown device, at most this often:
# a device registered a moment ago must not be rejected, and a flood of
# unknown ids costs one cheap version query per batch at most.
REGISTRY_MIN_GAP_S = 0.05
HOUSEKEEPING_EVERY_S = 3600.0  # partitions ahead of time (plain PostgreSQL)
DRAIN_TIMEOUT_S = 10.0
DB_RETRY_MIN_S = 0.5
DB_RETRY_MAX_S = 15.0
APPLICATION_NAME = "firesafe-ingest"  # visible in pg_stat_activity

_MAINS = READING_INDEX["mains"]
_URGENT_SUFFIXES = ("/event", "/status")
# Rejects that do not show the named device is alive: it may not exist, or the
# message came from elsewhere (another site's topic).
_NOT_FROM_THE_DEVICE = frozenset({"unknown_device", "site_mismatch", "bad_topic"})


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class Counters:
    messages: int = 0
    readings: int = 0
    events: int = 0
    rejects: int = 0
    duplicates: int = 0
    seq_gaps: int = 0
    batches: int = 0
    latencies_ms: list[float] = field(default_factory=list)


def _first_of_keys(
    slot: NDArray[np.int64], ts: NDArray[np.int64], seq: NDArray[np.int64]
) -> NDArray[np.bool_]:
    """Mask keeping the first row of each (slot, ts, seq) key (in-batch duplicates)."""
    keep = np.ones(slot.size, dtype=np.bool_)
    if slot.size < 2:
        return keep
    order = np.lexsort((seq, ts, slot))
    s, t, q = slot[order], ts[order], seq[order]
    same = (s[1:] == s[:-1]) & (t[1:] == t[:-1]) & (q[1:] == q[:-1])
    keep[order[1:][same]] = False
    return keep


class IngestService:
    def __init__(self, settings: Settings, *, instance: str | None = None) -> None:
        self.settings = settings
        self.dsn = settings.require_database_url()
        self.instance = instance or f"{socket.gethostname()}:{os.getpid()}"
        self.intake: list[RawMessage] = []
        self._wake = asyncio.Event()
        self._urgent = False
        self._stopping = asyncio.Event()
        self.source = MqttSource(settings.mqtt, settings.mqtt_client_id, self._deliver)
        self.engine = Engine()
        self.tracker = DeviceTracker()
        self.supervisor = Supervisor()
        self.linkage = Linkage()
        self.registry = Registry([])
        self.decoder = Decoder(self.registry)
        self.counters = Counters()
        self.ready = asyncio.Event()
        self._writer: psycopg.AsyncConnection[Any] | None = None
        self._aux: psycopg.AsyncConnection[Any] | None = None
        self._registry_version: tuple[int, datetime | None] = (-1, None)
        self._registry_checked = 0.0
        self._clear_log_id = 0
        self._watermark = 0
        self._started_ms = now_ms()
        self._flavour: store.Flavour = "plain"

    # ------------------------------------------------------------- intake
    def _deliver(self, message: RawMessage) -> None:
        self.intake.append(message)
        if message.topic.endswith(_URGENT_SUFFIXES):
            self._urgent = True
        if len(self.intake) >= INTAKE_HIGH_WATER:
            self.source.pause()
        if not self._wake.is_set():
            self._wake.set()

    @property
    def queue_depth(self) -> int:
        return len(self.intake)

    def request_stop(self) -> None:
        self._stopping.set()

    # ------------------------------------------------------------ running
    async def run(self) -> None:
        """Run until `request_stop()`; then drain, acknowledge and close in order."""
        await self._open_database()
        await self._load_state()
        try:
            async with asyncio.TaskGroup() as tasks:
                mqtt = tasks.create_task(self.source.run(), name="ingest-mqtt")
                processor = tasks.create_task(self._process_loop(), name="ingest-processor")
                housekeeping = tasks.create_task(self._housekeeping(), name="ingest-housekeeping")
                self.ready.set()
                await self._stopping.wait()
                # 1. stop intake, 2. drain what was received, 3. disconnect.
                self.source.pause()
                await asyncio.wait_for(processor, DRAIN_TIMEOUT_S + 5)
                housekeeping.cancel()
                await self.source.stop()
                await mqtt
        finally:
            await self._close_database()

    async def _open_database(self) -> None:
        self._flavour = await asyncio.to_thread(current_flavour, self.dsn)
        delay = DB_RETRY_MIN_S
        while True:
            try:
                self._writer = await psycopg.AsyncConnection.connect(
                    self.dsn, application_name=APPLICATION_NAME
                )
                await store.prepare_connection(self._writer)
                self._aux = await psycopg.AsyncConnection.connect(
                    self.dsn, autocommit=True, application_name=APPLICATION_NAME
                )
                return
            except psycopg.OperationalError as exc:
                log.warning("database unavailable (%s); retrying in %.1f s", exc, delay)
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))  # jitter
                delay = min(DB_RETRY_MAX_S, delay * 2)

    async def _close_database(self) -> None:
        for conn in (self._writer, self._aux):
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.close()

    async def _reconnect_database(self) -> None:
        await self._close_database()
        self._writer = self._aux = None
        await self._open_database()

    async def _load_state(self) -> None:
        assert self._aux is not None
        await self._refresh_registry(force=True)
        self.tracker.load(await store.load_device_state(self._aux))
        for row in await store.load_open_alarms(self._aux):
            slot = int(row["slot"])
            if row["type"] == "offline":
                self.supervisor.mark_offline(slot)
                continue
            self.engine.restore_alarm(
                slot, row["type"], row["verdict"], int(row["opened_ms"]), row["reason"]
            )
            if row["type"] == "fire" and row["verdict"] == "confirmed":
                self.linkage.fire_confirmed(
                    row["id"], row["site_id"], row["building"], row["floor"], row["zone"]
                )
        self._clear_log_id = await store.last_log_id(self._aux)

    async def _refresh_registry(self, *, force: bool = False) -> bool:
        """Reload the registry if it changed; True when it did."""
        assert self._aux is not None
        self._registry_checked = time.monotonic()
        version = await store.registry_version(self._aux)
        if version == self._registry_version and not force:
            return False
        rows = await store.load_registry(self._aux)
        self._registry_version = version
        registry = Registry(device_from_row(row) for row in rows)
        self.registry = registry
        self.decoder = Decoder(registry)
        self.tracker.ensure(registry.size)
        slots = registry.slots
        self.engine.configure(
            slots,
            registry.kind[slots],
            registry.zone[slots],
            [registry.device(int(s)).thresholds for s in slots],
            intervals_ms=registry.interval_ms[slots],
        )
        baseline = np.maximum(registry.registered_ms, self._started_ms)
        baseline = np.maximum(baseline, self.tracker.last_seen[: registry.size])
        self.supervisor.configure(slots, registry.interval_ms, baseline)
        log.info("registry: %d devices", len(registry))
        return True

    # ---------------------------------------------------------- processor
    async def _process_loop(self) -> None:
        """Batches in order; the next batch is decoded while the previous one commits
        (PostgreSQL works on the other core), and bookkeeping runs between commits."""
        next_tick = time.monotonic()
        next_stats = next_state = next_registry = time.monotonic()
        committing: asyncio.Task[None] | None = None
        try:
            while True:
                stopping = self._stopping.is_set()
                if stopping and not self.intake:
                    break
                if not stopping:
                    await self._wait_for_batch(next_tick)
                if self.intake:
                    burst = self._take_batch()
                    self._urgent = any(m.topic.endswith(_URGENT_SUFFIXES) for m in self.intake)
                    if len(self.intake) <= INTAKE_LOW_WATER and not stopping:
                        self.source.resume()
                    batch = await self._decode(burst)
                    if committing is not None:
                        await committing
                    committing = asyncio.create_task(
                        self._with_database(self._commit, burst, batch, {}), name="ingest-commit"
                    )
                mono = time.monotonic()
                due_registry = mono >= next_registry and not stopping
                due_tick = mono >= next_tick
                due_state = mono >= next_state or stopping
                due_stats = mono >= next_stats or stopping
                if not (due_registry or due_tick or due_state or due_stats):
                    continue
                if committing is not None:  # one transaction at a time on the writer
                    await committing
                    committing = None
                if due_registry:
                    next_registry = mono + REGISTRY_EVERY_S
                    await self._with_database(self._poll_changes)
                if due_tick:
                    next_tick = mono + TICK_S
                    await self._with_database(self._supervise)
                if due_state:
                    next_state = mono + STATE_EVERY_S
                    await self._with_database(self._flush_device_state)
                if due_stats:
                    next_stats = mono + STATS_EVERY_S
                    await self._with_database(self._write_stats)
        finally:
            if committing is not None:
                await committing

    def _take_batch(self) -> list[RawMessage]:
        """The oldest messages, up to BATCH_MAX_MESSAGES or BATCH_MAX_BYTES."""
        count, size = 0, 0
        for message in self.intake[:BATCH_MAX_MESSAGES]:
            count += 1
            size += len(message.payload)
            if size >= BATCH_MAX_BYTES:
                break
        burst = self.intake[:count]
        del self.intake[:count]
        return burst

    async def _wait_for_batch(self, next_tick: float) -> None:
        """Until a batch is due (size, age or urgency), a tick is due, or stop."""
        deadline = next_tick
        while not self._stopping.is_set():
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
        """Run a database step; on a lost connection, reconnect and run it again."""
        delay = DB_RETRY_MIN_S
        while True:
            try:
                await step(*args)
                return
            except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                if self._stopping.is_set() and step != self._commit:
                    return  # bookkeeping is not worth waiting for; batches are
                log.warning("database error (%s); retrying in %.1f s", exc, delay)
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))  # jitter
                delay = min(DB_RETRY_MAX_S, delay * 2)
                with contextlib.suppress(psycopg.Error):
                    await self._reconnect_database()
            except psycopg.Error as exc:
                if step == self._commit:
                    raise
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
        return batch

    async def _try_refresh_registry(self) -> bool:
        """A refresh that may fail (the database is away): the periodic poll retries."""
        try:
            return await self._refresh_registry()
        except psycopg.Error as exc:
            log.warning("registry refresh failed (%s); keeping the current registry", exc)
            return False

    async def _process_burst(self, burst: Sequence[RawMessage]) -> None:
        await self._commit(burst, await self._decode(burst), {})

    async def _commit(
        self, burst: Sequence[RawMessage], batch: DecodedBatch, memo: dict[str, Any]
    ) -> None:
        """Store, acknowledge, link. `memo` survives a retry of the same batch, so
        detection (which advances its state) runs once per batch."""
        try:
            applied = await self._store(batch, memo)
        except (psycopg.DataError, psycopg.IntegrityError) as exc:
            # Should not happen (decode guards what PostgreSQL refuses); if it does,
            # isolate the message the database refuses instead of stopping.
            await self._bisect(burst, exc)
            return
        self.source.ack(burst)
        await self._link(applied)
        c = self.counters
        c.batches += 1
        c.messages += len(burst)
        c.readings += batch.readings
        c.events += batch.events
        c.rejects += len(batch.rejects)
        oldest = min(m.received_ms for m in burst)
        c.latencies_ms.append(now_ms() - oldest)

    async def _bisect(self, burst: Sequence[RawMessage], exc: Exception) -> None:
        if len(burst) == 1:
            m = burst[0]
            assert self._writer is not None
            async with self._writer.transaction():
                await store.write_rejects(
                    self._writer,
                    [
                        store.RejectRow(
                            m.received_ms,
                            m.topic,
                            "bad_payload",
                            m.payload,
                            f"the database refused it: {exc}"[:500],
                            None,
                        )
                    ],
                )
            self.source.ack(burst)
            return
        half = len(burst) // 2
        for part in (burst[:half], burst[half:]):
            try:
                await self._process_burst(part)
            except (psycopg.DataError, psycopg.IntegrityError) as inner:
                await self._bisect(part, inner)

    async def _store(self, batch: DecodedBatch, memo: dict[str, Any]) -> list[store.AppliedAlarm]:
        """One transaction: events, telemetry, rejects, detection's alarms."""
        registry = self.registry
        writer = self._writer
        assert writer is not None
        # In-batch duplicates (same device, ts, seq), across telemetry and events.
        keep_ev = _first_of_keys(batch.ev_slot, batch.ev_ts, batch.ev_seq)
        keep_tel = _first_of_keys(batch.slot, batch.ts, batch.seq)
        if batch.ev_slot.size and batch.slot.size:
            ev_keys = set(
                zip(
                    batch.ev_slot.tolist(), batch.ev_ts.tolist(), batch.ev_seq.tolist(), strict=True
                )
            )
            cand = np.flatnonzero(np.isin(batch.slot, batch.ev_slot))
            for i in cand.tolist():
                if (int(batch.slot[i]), int(batch.ts[i]), int(batch.seq[i])) in ev_keys:
                    keep_tel[i] = False
        in_batch_dups = int((~keep_ev).sum() + (~keep_tel).sum())
        dropped = np.concatenate([batch.ev_slot[~keep_ev], batch.slot[~keep_tel]])
        ev_idx = np.flatnonzero(keep_ev)
        tel_idx = np.flatnonzero(keep_tel)
        ev_slot, ev_ts, ev_seq = batch.ev_slot[ev_idx], batch.ev_ts[ev_idx], batch.ev_seq[ev_idx]
        slot, ts, seq = batch.slot[tel_idx], batch.ts[tel_idx], batch.seq[tel_idx]
        values = batch.values[tel_idx]
        received = batch.received[tel_idx]
        extra = {int(np.searchsorted(tel_idx, i)): v for i, v in batch.extra.items() if keep_tel[i]}
        maybe_dup = self.tracker.maybe_duplicate(slot, ts)

        async with writer.transaction():
            ev_new = await store.write_events(
                writer,
                device_ids=[registry.device(int(s)).id for s in ev_slot],
                slot=ev_slot,
                ts=ev_ts,
                seq=ev_seq,
                received=batch.ev_received[ev_idx],
                types=[EVENT_TYPES[int(c)] for c in batch.ev_code[ev_idx]],
                details=[batch.ev_detail[int(i)] for i in ev_idx],
            )
            tel_new = await store.write_telemetry(
                writer,
                self._flavour,
                slot=slot,
                ts=ts,
                seq=seq,
                received=received,
                maybe_dup=maybe_dup,
                values=values,
                extra=extra,
            )
            await store.write_rejects(
                writer,
                [
                    store.RejectRow(
                        r.received_ms, r.topic, r.reason, r.payload, r.detail, r.device_id
                    )
                    for r in batch.rejects
                ],
            )
            if "writes" not in memo:  # detection and supervision advance their state once
                changes = self._detect(
                    slot[tel_new],
                    ts[tel_new],
                    values[tel_new],
                    ev_slot[ev_new],
                    ev_ts[ev_new],
                    batch.ev_code[ev_idx][ev_new],
                    max(int(received.max(initial=0)), int(batch.ev_received.max(initial=0))),
                )
                memo["writes"] = [self._alarm_write(c) for c in changes]
                memo["writes"] += self._supervise_batch(batch)
            applied = await store.apply_alarm_writes(writer, memo["writes"])

        # Committed: fold into what we know of each device.
        all_slot = np.concatenate([slot, ev_slot])
        all_new = np.concatenate([tel_new, ev_new])
        self.counters.seq_gaps += self.tracker.committed(
            all_slot,
            np.concatenate([ts, ev_ts]),
            np.concatenate([seq, ev_seq]),
            np.concatenate([received, batch.ev_received[ev_idx]]),
            all_new,
        )
        self.tracker.duplicates_dropped(dropped)
        self.counters.duplicates += in_batch_dups + int((~all_new).sum())
        self.tracker.seen(*self._heard_in_rejects(batch))
        if batch.st_slot.size:
            live = ~batch.st_retained
            self.tracker.seen(batch.st_slot[live], batch.st_received[live])
            self.tracker.set_status(batch.st_slot, batch.st_online, batch.st_received)
        mains = values[:, _MAINS]
        has_mains = tel_new & ~np.isnan(mains)
        if has_mains.any():  # evac units only; the last value per device wins
            self.tracker.set_mains(slot[has_mains], mains[has_mains] >= 0.5)
        return applied

    def _detect(
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
        arrival = max(arrival_ms, self._watermark) if arrival_ms > 0 else now_ms()
        self._watermark = arrival  # the arrival clock: only moves forward
        changes = self.engine.process(
            Readings(slot=slot, ts=ts, values=values),
            Events(slot=ev_slot, ts=ev_ts, code=ev_code),
            arrival,
        )
        changes += self.engine.advance(arrival)
        return changes

    def _alarm_write(self, change: AlarmChange) -> store.AlarmWrite:
        device = self.registry.device(change.slot)
        detail: dict[str, Any] = dict(change.detail)
        if change.related:
            detail["related"] = [self.registry.device(s).id for s in change.related]
        return store.AlarmWrite(
            device_id=device.id,
            site=device.site,
            building=device.building,
            floor=device.floor,
            zone=device.zone,
            alarm_type=change.alarm_type,
            action=change.action,  # type: ignore[arg-type]
            verdict=change.verdict,
            reason=change.reason,
            at_ms=change.at_ms,
            detail=detail,
        )

    def _offline_write(self, slot: int, action: str, reason: str, at_ms: int) -> store.AlarmWrite:
        device = self.registry.device(slot)
        return store.AlarmWrite(
            device_id=device.id,
            site=device.site,
            building=device.building,
            floor=device.floor,
            zone=device.zone,
            alarm_type="offline",
            action=action,  # type: ignore[arg-type]
            verdict="confirmed",
            reason=reason,
            at_ms=at_ms,
            detail={},
        )

    def _heard_in_rejects(self, batch: DecodedBatch) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        """Registered devices whose messages were rejected for their content: a broken
        payload on a device's own topic still shows the device is alive."""
        heard = [
            (device.slot, r.received_ms)
            for r in batch.rejects
            if r.device_id is not None
            and r.reason not in _NOT_FROM_THE_DEVICE
            and (device := self.registry.get(r.device_id)) is not None
        ]
        arr = np.array(heard, dtype=np.int64).reshape(-1, 2)
        return arr[:, 0].copy(), arr[:, 1].copy()

    def _supervise_batch(self, batch: DecodedBatch) -> list[store.AlarmWrite]:
        """Arrivals clear `offline`; a status `offline` (last will) raises it at once."""
        live = ~batch.st_retained
        heard_slot, heard_at = self._heard_in_rejects(batch)
        seen_slot = np.concatenate(
            [batch.slot, batch.ev_slot, batch.st_slot[live & batch.st_online], heard_slot]
        )
        seen_at = np.concatenate(
            [batch.received, batch.ev_received, batch.st_received[live & batch.st_online], heard_at]
        )
        writes = []
        for s in self.supervisor.seen(seen_slot, seen_at).tolist():
            at = int(seen_at[seen_slot == s].min())
            writes.append(self._offline_write(s, "clear", "back_online", at))
        gone = batch.st_slot[~batch.st_online]
        if gone.size:
            for s in self.supervisor.went_offline(gone).tolist():
                at = int(batch.st_received[(batch.st_slot == s) & ~batch.st_online].min())
                writes.append(self._offline_write(s, "open", "last_will", at))
        return writes

    async def _supervise(self) -> None:
        slots, deadlines = self.supervisor.check(now_ms())
        if not slots.size:
            return
        writes = [
            self._offline_write(s, "open", "silent", d)
            for s, d in zip(slots.tolist(), deadlines.tolist(), strict=True)
        ]
        assert self._writer is not None
        async with self._writer.transaction():
            await store.apply_alarm_writes(self._writer, writes)
        log.info("%d device(s) went offline", len(writes))

    async def _poll_changes(self) -> None:
        """Registry changes and alarms a person cleared (they may fire again)."""
        assert self._aux is not None
        await self._refresh_registry()
        buildings: dict[Building, str | None] = {}
        for row in await store.cleared_by_people(self._aux, self._clear_log_id):
            self._clear_log_id = max(self._clear_log_id, int(row["log_id"]))
            device = self.registry.get(row["device_id"])
            if device is None:
                continue
            if row["type"] == "offline":
                self.supervisor.reset(device.slot, now_ms())
                continue
            self.engine.clear(device.slot, row["type"])
            if row["type"] == "fire":
                buildings[self.linkage.fire_cleared(row["id"], row["site_id"], row["building"])] = (
                    None
                )
        for building, alarm_id in buildings.items():
            await self._send_commands(building, alarm_id)

    async def _link(self, applied: Sequence[store.AppliedAlarm]) -> None:
        buildings: dict[Building, str | None] = {}
        for a in applied:
            w = a.write
            if w.alarm_type != "fire":
                continue
            if a.logged in ("confirmed",) or (a.logged == "opened" and w.verdict == "confirmed"):
                buildings[
                    self.linkage.fire_confirmed(a.alarm_id, w.site, w.building, w.floor, w.zone)
                ] = a.alarm_id
            elif a.logged == "cleared":
                buildings[self.linkage.fire_cleared(a.alarm_id, w.site, w.building)] = None
        for building, alarm_id in buildings.items():
            await self._send_commands(building, alarm_id)

    async def _send_commands(self, building: Building, alarm_id: str | None) -> None:
        commands = self.linkage.commands(self.registry, building, alarm_id)
        if not commands:
            return
        sent_at = now_ms()
        assert self._writer is not None
        async with self._writer.transaction():
            for c in commands:
                payload: dict[str, Any] = {"ts": sent_at, "cmd": c.cmd}
                if c.cmd == "emergency":
                    payload.update(alarm_id=c.alarm_id, direction=c.direction)
                self.source.publish(f"fs/v1/{c.site}/{c.device_id}/cmd", orjson.dumps(payload))
                await store.write_linkage(
                    self._writer,
                    alarm_id=c.alarm_id,
                    device_id=c.device_id,
                    site=c.site,
                    building=c.building,
                    cmd=c.cmd,
                    direction=c.direction,
                    payload=payload,
                )
        log.info("linkage: %d command(s) to %s/%s", len(commands), *building)

    async def _flush_device_state(self) -> None:
        registered = self.registry.kind >= 0
        state = self.tracker.drain(registered)
        if state.slot.size:
            assert self._writer is not None
            async with self._writer.transaction():
                await store.write_device_state(self._writer, state)

    async def _write_stats(self) -> None:
        c = self.counters
        latencies, c.latencies_ms = c.latencies_ms, []
        lag = (now_ms() - self.intake[0].received_ms) if self.intake else 0
        assert self._writer is not None
        async with self._writer.transaction():
            await store.write_stats(
                self._writer,
                {
                    "at": datetime.now(UTC),
                    "instance": self.instance,
                    "messages": c.messages,
                    "readings": c.readings,
                    "events": c.events,
                    "rejects": c.rejects,
                    "duplicates": c.duplicates,
                    "seq_gaps": c.seq_gaps,
                    "batches": c.batches,
                    "batch_latency_ms": float(np.percentile(latencies, 95)) if latencies else None,
                    "queue_depth": self.queue_depth,
                    "lag_ms": float(lag),
                    "broker_connected": self.source.subscribed,  # connected and subscribed
                },
            )

    async def _housekeeping(self) -> None:
        while True:
            if self._flavour == "plain":
                try:
                    await asyncio.to_thread(self._ensure_partitions)
                except psycopg.Error as exc:
                    log.warning("partition housekeeping failed: %s", exc)
            await asyncio.sleep(HOUSEKEEPING_EVERY_S)

    def _ensure_partitions(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            partitions.ensure(
                conn, now=datetime.now(UTC), retention_days=self.settings.retention_days
            )
