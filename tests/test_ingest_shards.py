"""Site shards shared by several ingest processes (issue: scale out and fail over),
on the real broker and database: every site covered, handovers and takeovers
with nothing lost or stored twice, and no false `offline` on the way."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import psycopg
import pytest

from detection import Engine
from firesafe.settings import Settings
from ingest import shards
from storage import shards as leases
from tests.helpers import (
    IngestThread,
    Publisher,
    drain,
    forget_session,
    query,
    register,
    wait_for,
)
from tests.netproxy import CuttableProxy, database_proxy

SHARDS = 64  # what the test database recorded when it was migrated


# ------------------------------------------------------------------ kernels
def test_a_sites_shard_is_a_stable_hash_of_its_id() -> None:
    assert shards.shard_of("S1", 64) == zlib.crc32(b"S1") % 64 == 18
    assert shards.shard_of("building-7", 1) == 0
    assert shards.client_id("firesafe-ingest", 5) == "firesafe-ingest-s5"
    assert shards.subscriptions(["B", "A"]) == ["fs/v1/A/#", "fs/v1/B/#"]


@pytest.mark.parametrize(
    ("owned", "free", "others", "take", "release"),
    [
        (set(), set(range(8)), [], list(range(8)), []),  # alone: everything
        (set(), set(range(8)), [0, 0], [0, 1, 2], []),  # ceil(8/3) = 3
        (set(range(8)), set(), [0], [], [4, 5, 6, 7]),  # a process joined: hand over half
        ({0, 1, 2}, {5, 6, 7}, [2], [5], []),  # a process died: take up to the share
        ({0, 1, 2, 3}, set(), [4], [], []),  # balanced
        ({0, 1, 2}, set(), [3, 2], [], []),  # 3/3/2 of 8: within one
        ({0, 1, 2}, set(), [3, 1], [], [2]),  # 3/3/1: the fullest (highest id) gives one
        ({0, 1, 2}, set(), [1, 4], [], []),  # 3/1/4: the other (4) is fuller
    ],
)
def test_balance_ends_with_every_process_within_one_shard_of_the_others(
    owned: set[int], free: set[int], others: list[int], take: list[int], release: list[int]
) -> None:
    held = {pid: count for pid, count in enumerate(others, start=1)}
    me = 10  # the highest session id: first to give when counts tie
    assert shards.balance(owned, free, 8, held, me) == (take, release)


def test_forgotten_devices_are_as_if_never_configured() -> None:
    """A shard handed over and taken back must not keep stale detection state."""
    fresh = Engine(capacity=8)
    used = Engine(capacity=8)
    for e in (fresh, used):
        e.configure([0, 1], [0, 0], [0, 0], [{}, {}])
    used.restore_alarm(0, "fire", "confirmed", 1_764_072_000_000, "call_point")
    used.forget([0])
    used.configure([0], [0], [0], [{}])
    for name, value in vars(fresh).items():
        if isinstance(value, np.ndarray) and value.shape[:1] == (fresh.capacity,):
            a, b = np.asarray(getattr(used, name)[0]), np.asarray(value[0])
            assert a.tobytes() == b.tobytes(), f"{name} kept state"  # NaN == NaN here
    assert 0 not in used.machine.dev


# -------------------------------------------------------------- integration
def sharded(db: str, mqtt_url: str, base: str) -> Settings:
    return Settings(mqtt_url=mqtt_url, database_url=db, mqtt_client_id=base, ingest_mode="sharded")


def behind_a_proxy(db: str, mqtt_url: str, base: str) -> tuple[CuttableProxy, Settings]:
    """A sharded process's settings reaching the database through a proxy the
    test can cut (connections dropped) or hold (a database that hangs)."""
    proxy, via_proxy = database_proxy(db)
    return proxy, sharded(via_proxy, mqtt_url, base)


def ownership(db: str) -> dict[int, int]:
    async def go() -> dict[int, int]:
        async with await psycopg.AsyncConnection.connect(db, autocommit=True) as conn:
            return (await leases.view(conn)).owners

    return asyncio.run(go())


def all_owned_by(db: str, n: int) -> bool:
    owners = ownership(db)
    if len(owners) != SHARDS:
        return False
    per = sorted(list(owners.values()).count(p) for p in set(owners.values()))
    return len(per) == n and per[-1] - per[0] <= 1


@pytest.fixture
def base(mqtt_url: str) -> Iterator[str]:
    """The client id base of this test's cluster; its shard sessions forgotten after."""
    name = f"shard-{uuid.uuid4().hex[:8]}"
    yield name
    for k in range(SHARDS):
        forget_session(mqtt_url, shards.client_id(name, k))


def estate(site: str, sites: int, interval_s: float = 3600.0) -> list[dict[str, Any]]:
    return [
        {
            "id": f"{site}x{i}-H",
            "site": f"{site}x{i}",
            "building": "B",
            "floor": "1",
            "zone": "Z",
            "kind": "heat",
            "interval_s": interval_s,
        }
        for i in range(sites)
    ]


def stored(db: str, site: str) -> tuple[int, int]:
    row = query(
        db,
        "SELECT count(*), count(DISTINCT (device_id, seq)) FROM telemetry WHERE device_id LIKE %s",
        (f"{site}x%",),
    )[0]
    return int(row[0]), int(row[1])


def settled(db: str, site: str, sent: int, timeout: float = 60) -> None:
    """Every reading sent is stored, once (else: say how many, and how many twice)."""
    try:
        wait_for(lambda: stored(db, site) == (sent, sent), timeout=timeout)
    except AssertionError:
        rows, distinct = stored(db, site)
        raise AssertionError(f"{distinct} of {sent} readings stored ({rows} rows)") from None


PROBE_SEQ = 4_000_000_000  # far from any stream's seq


def listening(db: str, mqtt_url: str, site: str, sites: int) -> int:
    """Wait until every site's shard session is subscribed: a lock taken is not yet
    a SUBSCRIBE acknowledged, and the broker keeps nothing for a session before its
    first subscription. One probe reading per site is re-sent until each is stored
    (a re-send is a duplicate, stored once). Returns the probes stored."""
    pub = Publisher(mqtt_url)
    probes = {
        f"{site}x{i}": {"ts": int(time.time() * 1000), "seq": PROBE_SEQ, "v": {}}
        for i in range(sites)
    }

    def all_stored() -> bool:
        got = {
            row[0]
            for row in query(
                db,
                "SELECT device_id FROM telemetry WHERE device_id LIKE %s AND seq = %s",
                (f"{site}x%", PROBE_SEQ),
            )
        }
        for s, reading in probes.items():
            if f"{s}-H" not in got:
                pub.send(f"fs/v1/{s}/{s}-H/telemetry", reading)
        return len(got) == sites

    try:
        wait_for(all_stored, timeout=60)
    finally:
        pub.close()
    return sites


def offline_alarms(db: str, site: str, stream: Stream | None = None) -> int:
    """Offline alarms of the estate; with a stream, only those dated while it was
    sending to every device: before it started (the shards were being shared
    out) and after it stopped the devices are rightly silent."""
    since = until = None
    if stream is not None:
        since = stream.started_at + timedelta(seconds=STREAM_SETTLE_S)
        until = stream.stopped_at
    return int(
        query(
            db,
            "SELECT count(*) FROM alarms WHERE type = 'offline' AND site_id LIKE %s "
            "AND (%s::timestamptz IS NULL OR opened_at >= %s::timestamptz) "
            "AND (%s::timestamptz IS NULL OR opened_at < %s::timestamptz)",
            (f"{site}x%", since, since, until, until),
        )[0][0]
    )


# A device's first reading of the stream reaches ingest within this, so an
# offline alarm dated later is one for a device that kept reporting.
STREAM_SETTLE_S = 4.0


class Stream:
    """A QoS 1 stream of readings from every site, until stopped."""

    def __init__(self, url: str, site: str, sites: int, period_s: float = 0.05) -> None:
        self.pub = Publisher(url)
        self.site, self.sites, self.period_s = site, sites, period_s
        self.sent = 0
        self.stopped_at: datetime | None = None
        self.started_at = datetime.now(UTC)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        t0 = int(time.time() * 1000)
        seq = 0
        while not self._stop.is_set():
            for i in range(self.sites):
                self.pub.send(
                    f"fs/v1/{self.site}x{i}/{self.site}x{i}-H/telemetry",
                    {"ts": t0 + seq, "seq": seq, "v": {"temperature": 21.0}},
                )
                self.sent += 1
            seq += 1
            time.sleep(self.period_s)

    def stop(self) -> int:
        self.stopped_at = datetime.now(UTC)
        self._stop.set()
        self._thread.join(10)
        self.pub.close()
        return self.sent


@pytest.mark.integration
def test_three_processes_share_the_shards_and_a_graceful_stop_hands_them_over(
    db: str, mqtt_url: str, base: str, site: str
) -> None:
    register(db, estate(site, 30))
    settings = sharded(db, mqtt_url, base)
    first = IngestThread(settings).start()
    second = third = None
    try:
        wait_for(lambda: all_owned_by(db, 1), timeout=30)
        probes = listening(db, mqtt_url, site, 30)
        stream = Stream(mqtt_url, site, 30)
        second = IngestThread(settings).start()
        third = IngestThread(settings).start()
        wait_for(lambda: all_owned_by(db, 3), timeout=30)  # 22/21/21
        second.stop()  # graceful: drains, acknowledges, disconnects, then unlocks
        second = None
        wait_for(lambda: all_owned_by(db, 2), timeout=30)
        time.sleep(1.0)
        sent = stream.stop()
        settled(db, site, sent + probes)
    finally:
        for t in (first, second, third):
            if t is not None:
                t.stop()
    assert offline_alarms(db, site, stream) == 0


@pytest.mark.integration
@pytest.mark.usefixtures("full_broker")
def test_a_killed_process_loses_its_shards_to_the_others_with_nothing_lost(
    db: str, mqtt_url: str, base: str, site: str
) -> None:
    """kill -9 of a real `firesafe ingest` under a QoS 1 stream: its shards are
    taken over within seconds, every reading stored once, no device that kept
    reporting marked offline."""
    register(db, estate(site, 40, interval_s=2.0))
    env = {
        **os.environ,
        "FIRESAFE_MQTT_URL": mqtt_url,
        "FIRESAFE_DATABASE_URL": db,
        "FIRESAFE_MQTT_CLIENT_ID": base,
        "FIRESAFE_INGEST_MODE": "sharded",
        "FIRESAFE_LOG_LEVEL": "WARNING",
    }
    cmd = [sys.executable, "-m", "firesafe.cli", "ingest"]
    procs = [subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL) for _ in range(3)]
    try:
        wait_for(lambda: all_owned_by(db, 3), timeout=60)
        probes = listening(db, mqtt_url, site, 40)
        stream = Stream(mqtt_url, site, 40, period_s=0.1)
        time.sleep(2.0)
        victim = procs.pop(0)
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
        killed = time.monotonic()
        wait_for(lambda: all_owned_by(db, 2), timeout=30)
        takeover_s = time.monotonic() - killed
        time.sleep(3.0)  # the stream goes on through the new owners
        sent = stream.stop()
        settled(db, site, sent + probes, timeout=90)
        print(f"shards owned again {takeover_s:.1f} s after kill -9")
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
    assert all(p.returncode == 0 for p in procs)
    assert offline_alarms(db, site, stream) == 0


@pytest.mark.integration
def test_a_site_registered_later_is_subscribed_by_its_shards_owner(
    db: str, mqtt_url: str, base: str, site: str
) -> None:
    register(db, estate(site, 2))
    with_thread = IngestThread(sharded(db, mqtt_url, base)).start()
    try:
        wait_for(lambda: all_owned_by(db, 1), timeout=30)
        register(db, [{**estate(site, 3)[2]}])  # a third site, registered now
        owner_sources = with_thread.service.ownership.sources  # type: ignore[union-attr]
        shard = shards.shard_of(f"{site}x2", SHARDS)
        wait_for(lambda: f"fs/v1/{site}x2/#" in owner_sources[shard].subscriptions, timeout=15)
        # The SUBSCRIBE may still be on its way (no SUBACK is exposed): the reading
        # is re-sent until it arrives; a re-send is a duplicate, stored once.
        pub = Publisher(mqtt_url)
        reading = {"ts": int(time.time() * 1000), "seq": 1, "v": {}}

        def delivered() -> bool:
            pub.send(f"fs/v1/{site}x2/{site}x2-H/telemetry", reading)
            return stored(db, site)[0] >= 1

        try:
            wait_for(delivered, timeout=15, interval=0.2)
            drain(db, pub, f"{site}x2")  # re-sends still on their way are in
        finally:
            pub.close()
        assert stored(db, site) == (1, 1)
    finally:
        with_thread.stop()


@pytest.mark.integration
def test_a_process_that_loses_its_database_session_stops_and_its_shards_move(
    db: str, mqtt_url: str, base: str, site: str
) -> None:
    register(db, estate(site, 20))
    proxy, settings = behind_a_proxy(db, mqtt_url, base)
    cut_off = IngestThread(settings).start()
    other = None
    try:
        wait_for(lambda: all_owned_by(db, 1), timeout=30)
        other = IngestThread(sharded(db, mqtt_url, base)).start()
        wait_for(lambda: all_owned_by(db, 2), timeout=30)
        probes = listening(db, mqtt_url, site, 20)
        stream = Stream(mqtt_url, site, 20)
        proxy.cut()  # partitioned from the database (the server notices at once here)
        service = cut_off.service
        assert service is not None
        wait_for(lambda: not service.ownership.sources, timeout=15)  # stopped reading
        wait_for(lambda: all_owned_by(db, 1), timeout=30)  # the other took everything
        time.sleep(1.0)
        sent = stream.stop()
        settled(db, site, sent + probes)
        proxy.restore()  # back: it starts over and the two share again
        wait_for(lambda: all_owned_by(db, 2), timeout=60)
    finally:
        if other is not None:
            other.stop()
        cut_off.stop()
        proxy.close()
    assert offline_alarms(db, site, stream) == 0


@pytest.mark.integration
def test_a_process_whose_database_stops_answering_stops_reading_and_its_shards_move(
    db: str, mqtt_url: str, base: str, site: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A partition seen from one process: its queries are never answered (no
    error reaches it), while the server ends its sessions (keepalive) and so
    frees its leases. An outside check saw such a process keep reconnecting
    the broker sessions of the shards a peer had taken (one client id, two
    sessions kicking each other off). After DB_ANSWER_S and a probe that gets
    no answer it drops its connections and sessions, and takes part again once
    the database answers."""
    from ingest import database_link

    monkeypatch.setattr(database_link, "DB_ANSWER_S", 4.0)
    monkeypatch.setattr(database_link, "DB_PROBE_S", 1.0)
    register(db, estate(site, 20))
    proxy, settings = behind_a_proxy(db, mqtt_url, base)
    partitioned = IngestThread(settings).start()
    other = None
    try:
        wait_for(lambda: all_owned_by(db, 1), timeout=30)
        other = IngestThread(sharded(db, mqtt_url, base)).start()
        wait_for(lambda: all_owned_by(db, 2), timeout=30)
        probes = listening(db, mqtt_url, site, 20)
        stream = Stream(mqtt_url, site, 20)
        service = partitioned.service
        assert service is not None
        proxy.hold()
        # The server's side of the partition: its keepalive ends the sessions.
        query(db, "SELECT pg_terminate_backend(%s)", (service.ownership.writer_pid,))
        wait_for(lambda: all_owned_by(db, 1), timeout=30)  # the other took everything
        taker = other.service
        assert taker is not None
        wait_for(
            lambda: len(taker.ownership.sources) == SHARDS and taker.ownership.subscribed,
            timeout=15,
        )
        # Meanwhile the cut-off process, which still believes it holds half of
        # them, does not take their sessions back (the database cannot tell it
        # they are still its own): before, the two kicked each other off.
        connections = {k: s.generation for k, s in taker.ownership.sources.items()}
        time.sleep(2.0)
        again = [k for k, s in taker.ownership.sources.items() if s.generation != connections[k]]
        assert len(again) <= 1, again
        wait_for(lambda: not service.ownership.sources, timeout=15)  # stopped reading
        sent = stream.stop()
        settled(db, site, sent + probes)
        proxy.release()  # answered again: it starts over and the two share again
        wait_for(lambda: all_owned_by(db, 2), timeout=60)
    finally:
        if other is not None:
            other.stop()
        proxy.release()
        partitioned.stop()
        proxy.close()
    assert offline_alarms(db, site, stream) == 0


@pytest.mark.integration
def test_the_shards_of_one_round_are_taken_over_together(
    db: str, mqtt_url: str, base: str, site: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process taking many shards at once (start-up, a failover) restores and
    configures them in one go: per shard, 1,000,000 devices took 123 s to start."""
    from ingest.shard_runtime import ShardHost, ShardRuntime

    rounds: list[list[int]] = []
    take_over = ShardRuntime.take_over

    async def recorded(self: ShardRuntime, host: ShardHost, taken: list[int]) -> None:
        rounds.append(list(taken))
        await take_over(self, host, taken)

    monkeypatch.setattr(ShardRuntime, "take_over", recorded)
    register(db, estate(site, 10, interval_s=2.0))
    alone = IngestThread(sharded(db, mqtt_url, base)).start()
    try:
        wait_for(lambda: all_owned_by(db, 1), timeout=30)
        service = alone.service
        assert service is not None
        wait_for(lambda: len(service.ownership.sources) == SHARDS and service.subscribed, 30)
        stream = Stream(mqtt_url, site, 10)
        time.sleep(1.0)
        sent = stream.stop()
        wait_for(lambda: stored(db, site) == (sent, sent), timeout=30)
    finally:
        alone.stop()
    assert rounds == [list(range(SHARDS))]
    assert offline_alarms(db, site, stream) == 0


def test_shards_held_by_a_stopped_process_are_taken_over(
    db: str, mqtt_url: str, base: str, site: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process stopped or wedged with its database connection alive (SIGSTOP,
    a paused VM) keeps its leases: nothing else ends them. Once it has not
    reported for STALLED_AFTER_S, a live process ends its session and takes
    its shards, and its sites are watched again."""
    from ingest import shard_runtime

    monkeypatch.setattr(shard_runtime, "STALLED_AFTER_S", 3.0)
    register(db, estate(site, 4, interval_s=2.0))
    stalled = psycopg.connect(db, autocommit=True)
    try:
        stalled.execute("SELECT pg_advisory_lock_shared(%s, 0)", (leases.MEMBER_LOCK_CLASS,))
        for shard in range(SHARDS):
            stalled.execute("SELECT pg_advisory_lock(%s, %s)", (leases.SHARD_LOCK_CLASS, shard))
        time.sleep(3.5)  # older than the limit, and never reported
        live = IngestThread(sharded(db, mqtt_url, base)).start()
        try:
            service = live.service
            assert service is not None
            wait_for(lambda: len(service.ownership.owned) == SHARDS, timeout=30)
            with pytest.raises(psycopg.OperationalError):
                stalled.execute("SELECT 1")
            wait_for(lambda: service.subscribed, timeout=30)
            stream = Stream(mqtt_url, site, 4)
            time.sleep(1.0)
            sent = stream.stop()
            wait_for(lambda: stored(db, site) == (sent, sent), timeout=30)
        finally:
            live.stop()
    finally:
        stalled.close()


def test_a_peer_is_not_judged_stalled_by_a_process_that_was_held_too(
    db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An outside check: a 75 s table lock held every ingest process; none could
    report, and the first one released ended its peer's session as stalled.
    A peer is judged stalled only by a process that itself reported without a
    gap of STEADY_REPORTS_S over the peer's silence."""
    monkeypatch.setattr(leases, "STEADY_REPORTS_S", 0.5)
    peer = psycopg.connect(db, autocommit=True)
    try:
        peer.execute("SELECT pg_advisory_lock(%s, %s)", (leases.SHARD_LOCK_CLASS, 7))
        peer_pid = int(peer.execute("SELECT pg_backend_pid()").fetchone()[0])  # type: ignore[index]

        async def judge(gaps_s: list[float]) -> list[int]:
            async with await psycopg.AsyncConnection.connect(db, autocommit=True) as own:
                cur = await own.execute("SELECT pg_backend_pid()")
                own_pid = int((await cur.fetchone())[0])  # type: ignore[index]
                await asyncio.sleep(1.2)  # both sessions older than the 1 s limit
                for ago in gaps_s:  # its own reports, so many seconds ago
                    await own.execute(
                        "INSERT INTO ingest_stats (at, instance, messages, readings, events, "
                        "rejects, duplicates, seq_gaps, batches, queue_depth, broker_connected, "
                        "backend_pid) VALUES (now() - make_interval(secs => %s), %s, "
                        "0, 0, 0, 0, 0, 0, 0, 0, true, %s)",
                        (ago, f"judge-{own_pid}", own_pid),
                    )
                return await leases.end_stalled_holders(own, 1.0, own_pid)

        # Held too: its last report 0.8 s ago (and none before): not judged.
        assert asyncio.run(judge([0.8])) == []
        peer.execute("SELECT 1")  # alive
        # Reported all along (every quarter second): the silent peer is stalled.
        assert asyncio.run(judge([1.0, 0.75, 0.5, 0.25, 0.05])) == [peer_pid]
        with pytest.raises(psycopg.OperationalError):
            peer.execute("SELECT 1")
    finally:
        peer.close()


def test_a_new_sites_topics_are_subscribed_at_once(
    db: str, mqtt_url: str, base: str, site: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Registering a site (here straight into the tables, as a script would)
    notifies ingest, which subscribes the site's topics at once, not at its next
    poll of the registry: MQTT drops what nobody is subscribed to, so readings a
    new site sent before its subscription were lost (up to 2 s of them)."""
    from ingest import service as service_module

    monkeypatch.setattr(service_module, "REGISTRY_EVERY_S", 300.0)  # no poll in this test
    register(db, estate(site, 1))
    live = IngestThread(sharded(db, mqtt_url, base)).start()
    try:
        wait_for(lambda: all_owned_by(db, 1), timeout=30)
        sources = live.service.ownership.sources  # type: ignore[union-attr]
        register(db, [{**estate(site, 2)[1]}])  # a second site, registered now
        shard = shards.shard_of(f"{site}x1", SHARDS)
        wait_for(lambda: f"fs/v1/{site}x1/#" in sources[shard].subscriptions, timeout=10)
    finally:
        live.stop()


def test_a_shard_is_not_handed_over_while_a_batch_of_it_waits_to_commit() -> None:
    """Bookkeeping (where shards are handed over) runs between the decoding of
    a batch and its commit: that batch's messages count as held, like the
    intake's, so its shard is released only once they are committed."""
    from ingest.decode import RawMessage
    from ingest.service import IngestService

    service = IngestService(
        Settings(database_url="postgresql://nobody@127.0.0.1:1/x", mqtt_url="mqtt://127.0.0.1:1")
    )
    message = RawMessage("fs/v1/S/D/telemetry", b"{}", 0, shard=3)
    assert not service.holds_messages_of(3)
    service._taken = [message]
    assert service.holds_messages_of(3)
    assert not service.holds_messages_of(4)
    service._taken, service.intake = (), [message]
    assert service.holds_messages_of(3)


def test_a_process_is_connected_only_while_every_session_it_holds_is() -> None:
    """The check of a sharded deployment: a process whose shard sessions were
    mostly away from the broker still reported itself connected (any one
    subscribed session was enough), and /health said ok."""
    from types import SimpleNamespace

    from ingest.ownership import Ownership

    ownership = Ownership(
        Settings(database_url="postgresql://nobody@127.0.0.1:1/x", mqtt_url="mqtt://127.0.0.1:1"),
        lambda _m: None,
        sharded=True,
    )
    assert ownership.connected  # holding nothing: nothing to be away from
    up, down = SimpleNamespace(subscribed=True), SimpleNamespace(subscribed=False)
    ownership.sources = {1: up, 2: down}  # type: ignore[dict-item]
    assert not ownership.connected
    ownership.sources = {1: up, 2: up}
    assert ownership.connected


@pytest.mark.integration
def test_taking_a_shard_over_leaves_the_shards_held_before_undisturbed(db: str) -> None:
    """A process taking a shard over replays that shard's devices' recent past,
    and only theirs: replaying the devices it already serves would settle
    their pending windows away (the database's alarms are restored only for
    the sites taken)."""
    from detection import Events, Readings
    from firesafe import contract
    from ingest.service import IngestService

    tag = uuid.uuid4().hex[:8]
    held, taken = f"A{tag}", f"B{tag}"
    register(
        db,
        [
            {"id": f"{site}-{d}", "site": site, "building": "B", "floor": "1", "zone": "Z",
             "kind": "smoke"}
            for site, d in ((held, "S1"), (held, "S2"), (taken, "S1"))
        ],
    )  # fmt: skip
    now = int(time.time() * 1000)
    with psycopg.connect(db, autocommit=True) as conn:  # their stored past
        conn.execute(
            "INSERT INTO telemetry (ts, device_id, seq, received_at, obscuration)"
            " SELECT to_timestamp((%s - k * 10000) / 1000.0), d, 100 - k, now(), 0.1"
            " FROM generate_series(1, 20) k, unnest(%s::text[]) d",
            (now, [f"{held}-S1", f"{held}-S2", f"{taken}-S1"]),
        )

    async def go() -> None:
        service = IngestService(sharded(db, "mqtt://127.0.0.1:1", f"shard-{tag}"))
        await service._open_database()
        try:
            await service._load_state()
            sites = {held}
            service.shards.held_sites = lambda: set(sites)  # type: ignore[method-assign]
            service._configure_owned()
            await service._restore({held})
            s1, s2 = (service.registry.get(f"{held}-{d}") for d in ("S1", "S2"))
            assert s1 is not None
            assert s2 is not None
            values = np.full((2, len(contract.READINGS)), np.nan)
            values[:, contract.READING_INDEX["obscuration"]] = (5.0, 0.1)
            service.engine.process(
                Readings(np.array([s1.slot, s2.slot]), np.array([now, now]), values),
                Events.empty(),
                now,
            )
            assert service.engine.open_alarms().get((s1.slot, "fire")) == "pending"
            sites.add(taken)
            service._configure_owned()
            await service._restore({taken})
            assert service.engine.open_alarms().get((s1.slot, "fire")) == "pending"
        finally:
            await service._close_database()

    asyncio.run(go())


@pytest.mark.integration
def test_a_process_that_cannot_reach_the_broker_holds_no_shard(
    db: str, mqtt_url: str, base: str, site: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An outside check: a process started with a wrong broker URL took four
    shards and held them, their sites silent and unsupervised for minutes; the
    same for one cut off from the broker. Now a process takes shards (and
    counts among the processes sharing them) only while it can reach the
    broker, and hands a shard whose session has been away DEAF_HANDOVER_S over
    to a process that hears the broker."""
    from firesafe.embedded import free_port
    from firesafe.settings import MqttEndpoint
    from ingest import shard_runtime

    monkeypatch.setattr(shard_runtime, "DEAF_HANDOVER_S", 3.0)  # 20 s: the test's time

    register(db, estate(site, 20))
    settings = sharded(db, mqtt_url, base)
    nowhere = sharded(db, f"mqtt://127.0.0.1:{free_port()}", base)
    ep = MqttEndpoint.parse(mqtt_url)
    proxy = CuttableProxy(ep.host, ep.port)
    via_proxy = sharded(db, f"mqtt://127.0.0.1:{proxy.port}", base)
    first = IngestThread(settings).start()
    wrong = IngestThread(nowhere)
    cut_off: IngestThread | None = None
    try:
        wait_for(lambda: all_owned_by(db, 1), timeout=30)
        wrong._thread.start()  # (it never subscribes: not `start()`)
        time.sleep(4.0)  # several rounds: it takes nothing, nor makes the other hand over
        assert all_owned_by(db, 1)
        cut_off = IngestThread(via_proxy).start()
        wait_for(lambda: all_owned_by(db, 2), timeout=30)  # it hears: it takes its share
        proxy.cut()
        wait_for(lambda: all_owned_by(db, 1), timeout=30)
        probes = listening(db, mqtt_url, site, 20)  # every site served again
        assert probes == 20
    finally:
        for t in (first, wrong, cut_off):
            if t is not None:
                t.stop()
        proxy.close()


@contextmanager
def two_processes_apart(
    db: str, mqtt_url: str, base: str, site: str
) -> Iterator[tuple[str, str, Publisher]]:
    """Two sharded ingest processes, and two sites of this test that different
    ones hold: (old, new, a publisher)."""
    candidates = [f"{site}x{i}" for i in range(40)]
    settings = sharded(db, mqtt_url, base)
    first = IngestThread(settings).start()
    second = IngestThread(settings).start()
    pub = Publisher(mqtt_url)
    try:
        wait_for(lambda: all_owned_by(db, 2), timeout=30)
        owners = ownership(db)
        old = candidates[0]
        new = next(
            s
            for s in candidates
            if owners[shards.shard_of(s, SHARDS)] != owners[shards.shard_of(old, SHARDS)]
        )
        yield old, new, pub
    finally:
        pub.close()
        first.stop()
        second.stop()


@pytest.mark.integration
def test_detectors_moved_to_a_site_another_process_holds_leave_no_fire_pending(
    db: str, mqtt_url: str, base: str, site: str
) -> None:
    """Two smoke detectors' fires are pending (verification windows open) when
    both are moved to a site another process holds: one has sent three
    readings at the alarm level, the other one (an insect). The process that
    held them judges each window at the old site with what it had sent before
    letting them go (forgotten, a pending fire stayed pending for good): the
    first is confirmed, the spike is a transient (judged as if gone silent, a
    recheck saw it confirmed). The new holder raises no offline for them (a
    recheck saw one at once, dated before the move)."""
    with two_processes_apart(db, mqtt_url, base, site) as (old, new, pub):
        base_dev = {"building": "B", "floor": "1", "zone": "Z", "kind": "smoke", "interval_s": 10}
        fire_dev, insect_dev = f"{old}-F", f"{old}-I"
        zones = {fire_dev: "Z1", insect_dev: "Z2"}  # (apart: together they coincide)
        register(db, [{**base_dev, "site": old, "id": d, "zone": z} for d, z in zones.items()])
        register(db, [{**base_dev, "site": new, "id": f"{new}-anchor"}])
        time.sleep(1.5)  # both processes reload the registry on its notification
        t = int(time.time() * 1000)

        def alarms_of(device: str) -> list[tuple[str, str, str, str]]:
            return [
                (str(r[0]), str(r[1]), str(r[2]), str(r[3]))
                for r in query(
                    db,
                    "SELECT type, site_id, verdict, reason FROM alarms WHERE device_id = %s "
                    "AND type IN ('fire', 'offline') ORDER BY opened_at",
                    (device,),
                )
            ]

        for device, levels in ((fire_dev, (0.1, 3.6, 3.9, 4.3)), (insect_dev, (0.1, 5.0))):
            for i, obs in enumerate(levels):
                reading = {"ts": t + 1000 * i, "seq": i + 1, "v": {"obscuration": obs}}
                pub.send(f"fs/v1/{old}/{device}/telemetry", reading)

        def pending() -> list[str]:
            return [d for d in (fire_dev, insect_dev) for a in alarms_of(d) if a[2] == "pending"]

        wait_for(lambda: len(pending()) == 2, timeout=15)
        register(db, [{**base_dev, "site": new, "id": d, "zone": z} for d, z in zones.items()])
        wait_for(lambda: not pending(), timeout=20)
        time.sleep(2.0)  # supervision ticks at the new holder
        judged = {d: alarms_of(d) for d in (fire_dev, insect_dev)}
        # Its pre-alarm at the old site is not left active for good either.
        still_active = query(
            db,
            "SELECT device_id FROM alarms WHERE type = 'pre_alarm' AND status <> 'cleared' "
            "AND site_id = %s",
            (old,),
        )
    assert judged == {
        fire_dev: [("fire", old, "confirmed", "fast_growth")],
        insect_dev: [("fire", old, "suppressed", "transient")],
    }
    assert still_active == []


@pytest.mark.integration
def test_a_device_moved_to_another_process_site_is_not_raised_offline_for_the_move(
    db: str, mqtt_url: str, base: str, site: str
) -> None:
    """A device heard every second at its old site is moved to a site another
    process holds and goes on reporting there. The new holder supervises it
    from the move: a recheck saw it raised offline at once, dated before the
    move (its supervision counted from its registration)."""
    with two_processes_apart(db, mqtt_url, base, site) as (old, new, pub):
        dev: dict[str, Any] = {"id": f"{old}-H", "building": "B", "floor": "1", "zone": "Z"}
        dev.update(kind="heat", interval_s=2)  # offline after 6 s unheard
        register(db, [{**dev, "site": old}])
        register(db, [{**dev, "site": new, "id": f"{new}-anchor"}])
        seq = itertools.count(1)

        def report(where: str, seconds: float) -> None:
            until = time.monotonic() + seconds
            while time.monotonic() < until:
                reading = {"ts": int(time.time() * 1000), "seq": next(seq), "v": {}}
                pub.send(f"fs/v1/{where}/{dev['id']}/telemetry", reading)
                time.sleep(0.5)

        report(old, 9.0)  # heard at the old site, longer than its offline limit
        register(db, [{**dev, "site": new}])
        time.sleep(2.0)  # the device is told its new site, and starts again
        report(new, 6.0)
        offline = query(
            db, "SELECT site_id FROM alarms WHERE device_id = %s AND type = 'offline'", (dev["id"],)
        )
    assert offline == []
