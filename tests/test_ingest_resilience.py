"""Nothing is lost when the broker restarts or the database drops ingest's
connections (the ingest-process restart is in test_ingest_integration)."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from psycopg import conninfo

from firesafe.embedded import EmbeddedBroker, free_port
from firesafe.settings import Settings
from tests.helpers import (
    Publisher,
    create_session,
    drain,
    forget_session,
    query,
    register,
    running_ingest,
    wait_for,
)
from tests.netproxy import CuttableProxy, database_proxy

pytestmark = pytest.mark.integration


def execute(db: str, statements: str) -> None:
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute(statements.encode())


def stored(db: str, device: str) -> int:
    return int(query(db, "SELECT count(*) FROM telemetry WHERE device_id = %s", (device,))[0][0])


def stored_site(db: str, site: str) -> int:
    return int(
        query(db, "SELECT count(*) FROM telemetry WHERE device_id LIKE %s", (f"{site}-%",))[0][0]
    )


def backends(db: str, dbname: str) -> int:
    return int(
        query(
            db,
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE application_name = 'firesafe-ingest' AND datname = %s",
            (dbname,),
        )[0][0]
    )


def ingest_behind_a_database_proxy(
    db: str, mqtt_url: str, client_id: str
) -> tuple[CuttableProxy, Settings]:
    """Settings of a single-mode ingest reaching its database through a proxy
    the test can cut (connections dropped) or hold (a database that hangs)."""
    proxy, via_proxy = database_proxy(db)
    settings = Settings(
        mqtt_url=mqtt_url, database_url=via_proxy, mqtt_client_id=client_id, ingest_mode="single"
    )
    return proxy, settings


def device(site: str) -> dict[str, object]:
    return {
        "id": f"{site}-H",
        "site": site,
        "building": "B",
        "floor": "1",
        "zone": "Z",
        "kind": "heat",
        "interval_s": 3600,
    }


@pytest.mark.skipif(shutil.which("mosquitto") is None, reason="needs the mosquitto binary")
def test_broker_restart_loses_nothing(db: str, tmp_path: Path) -> None:
    site = f"K{uuid.uuid4().hex[:8]}"
    register(db, [device(site)])
    dev = f"{site}-H"
    broker = EmbeddedBroker(tmp_path / "broker", port=free_port())
    url = broker.start()
    settings = Settings(
        mqtt_url=url, database_url=db, mqtt_client_id=f"resil-{site}", ingest_mode="single"
    )
    t0 = int(time.time() * 1000)
    try:
        with running_ingest(settings) as ingest:
            pub = Publisher(url)
            for i in range(100):
                pub.send(f"fs/v1/{site}/{dev}/telemetry", {"ts": t0 + i, "seq": i, "v": {}})
            pub.close()
            wait_for(lambda: stored(db, dev) == 100)
            broker.stop()  # the broker goes away (and saves its state)
            broker.start()  # same port, same persistence directory
            assert ingest.service is not None
            wait_for(
                lambda: ingest.service is not None and ingest.service.source.subscribed, timeout=40
            )
            pub = Publisher(url)
            for i in range(100, 200):
                pub.send(f"fs/v1/{site}/{dev}/telemetry", {"ts": t0 + i, "seq": i, "v": {}})
            pub.close()
            wait_for(lambda: stored(db, dev) == 200, timeout=30)
    finally:
        broker.stop()
    assert (
        query(db, "SELECT count(DISTINCT seq) FROM telemetry WHERE device_id = %s", (dev,))[0][0]
        == 200
    )


@pytest.mark.usefixtures("full_broker")
def test_database_connection_loss_loses_nothing(db: str, mqtt_url: str) -> None:
    site = f"P{uuid.uuid4().hex[:8]}"
    register(db, [device(site)])
    dev = f"{site}-H"
    settings = Settings(
        mqtt_url=mqtt_url, database_url=db, mqtt_client_id=f"resil-{site}", ingest_mode="single"
    )
    t0 = int(time.time() * 1000)
    dbname = query(db, "SELECT current_database()")[0][0]
    pub = Publisher(mqtt_url)
    try:
        with running_ingest(settings):
            for i in range(300):
                pub.send(f"fs/v1/{site}/{dev}/telemetry", {"ts": t0 + i, "seq": i, "v": {}})
                if i in (100, 200):  # the database drops ingest's sessions mid-stream
                    wait_for(lambda: backends(db, dbname) >= 2, timeout=30)  # (re)connected
                    killed = query(
                        db,
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE application_name = 'firesafe-ingest' AND datname = %s",
                        (dbname,),
                    )[0][0]
                    assert killed >= 2
            wait_for(lambda: stored(db, dev) == 300, timeout=40)
            drain(db, pub, site)  # redeliveries after the reconnects were committed too
    finally:
        pub.close()
        forget_session(mqtt_url, settings.mqtt_client_id)
    assert stored(db, dev) == 300


def test_a_database_outage_of_any_length_is_ridden_out(
    db: str, mqtt_url: str, publisher: Publisher, site: str
) -> None:
    """Down at start-up, then cut mid-stream: ingest waits, resumes by itself,
    and stores every reading once (the connection error is never fatal)."""
    register(db, [device(site)])
    dev = f"{site}-H"
    client_id = f"outage-{site}"
    proxy, settings = ingest_behind_a_database_proxy(db, mqtt_url, client_id)
    t0 = int(time.time() * 1000)
    create_session(mqtt_url, client_id)  # the broker keeps what comes meanwhile
    proxy.cut()  # the database is away when ingest starts
    try:
        from tests.helpers import IngestThread

        ingest = IngestThread(settings)
        ingest._thread.start()
        for i in range(50):
            publisher.send(f"fs/v1/{site}/{dev}/telemetry", {"ts": t0 + i, "seq": i, "v": {}})
        time.sleep(2.0)  # an outage of a few retry intervals
        assert ingest._thread.is_alive()
        proxy.restore()
        assert ingest._started.wait(60)
        wait_for(lambda: stored(db, dev) == 50, timeout=60)
        # Cut again mid-stream, for longer than one retry interval.
        for i in range(50, 100):
            publisher.send(f"fs/v1/{site}/{dev}/telemetry", {"ts": t0 + i, "seq": i, "v": {}})
            if i == 60:
                proxy.cut()
        time.sleep(5.0)  # past the third retry (0.5 + 1 + 2 s)
        assert ingest._thread.is_alive()
        proxy.restore()
        wait_for(lambda: stored(db, dev) == 100, timeout=60)
        ingest.stop()
    finally:
        proxy.close()
        forget_session(mqtt_url, client_id)
    assert query(
        db, "SELECT count(DISTINCT seq), count(*) FROM telemetry WHERE device_id = %s", (dev,)
    )[0] == (100, 100)


@pytest.mark.parametrize("outage", ["hung", "cut"])
def test_a_database_outage_is_not_the_estate_going_silent(
    db: str, mqtt_url: str, publisher: Publisher, site: str, outage: str
) -> None:
    """Devices go on reporting while ingest cannot reach its database for twice
    their offline limit (3 x 1 s): the database hangs (every connection open,
    no error) or drops ingest's connections and refuses new ones (ingest stops
    its broker session meanwhile). No device and no site is called offline,
    and every reading is stored once."""
    import threading

    devices = [{**device(site), "id": f"{site}-H{i}", "interval_s": 1} for i in range(5)]
    register(db, devices)
    client_id = f"outage-silence-{site}"
    proxy, settings = ingest_behind_a_database_proxy(db, mqtt_url, client_id)
    stopped = threading.Event()
    sent = [0]

    def report() -> None:  # every device every 0.3 s, outage or not
        while not stopped.is_set():
            now = int(time.time() * 1000)
            for d in devices:
                publisher.send(
                    f"fs/v1/{site}/{d['id']}/telemetry", {"ts": now, "seq": sent[0], "v": {}}
                )
            sent[0] += 1
            time.sleep(0.3)

    reporter = threading.Thread(target=report, daemon=True)
    try:
        with running_ingest(settings):
            reporter.start()
            wait_for(lambda: stored_site(db, site) >= 50, timeout=30)
            proxy.hold() if outage == "hung" else proxy.cut()
            time.sleep(7.0)
            proxy.release() if outage == "hung" else proxy.restore()
            at_end = sent[0]
            wait_for(lambda: stored_site(db, site) >= len(devices) * at_end, timeout=60)
            time.sleep(2.0)  # supervision goes on judging after the backlog
            stopped.set()
            reporter.join()
            drain(db, publisher, site)
    finally:
        stopped.set()
        proxy.close()
        forget_session(mqtt_url, client_id)
    offline = query(
        db,
        "SELECT device_id, reason, opened_at, cleared_at FROM alarms "
        "WHERE site_id = %s AND type = 'offline'",
        (site,),
    )
    assert offline == []
    assert stored_site(db, site) == len(devices) * sent[0]


def test_a_message_the_database_refuses_is_isolated_and_the_rest_stored(
    db: str, ingest_settings: Settings, publisher: Publisher, site: str
) -> None:
    """Any failure while storing a batch bisects it to the message at fault, which
    becomes a reject and is acknowledged (not redelivered forever)."""
    register(db, [device(site)])
    dev = f"{site}-H"
    execute(
        db,
        """
        CREATE OR REPLACE FUNCTION test_refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.detail = 'poison' THEN RAISE EXCEPTION 'refused by a trigger'; END IF;
            RETURN NEW;
        END $$;
        DROP TRIGGER IF EXISTS test_refuse_poison ON device_events;
        CREATE TRIGGER test_refuse_poison BEFORE INSERT ON device_events
            FOR EACH ROW EXECUTE FUNCTION test_refuse_poison();
        """,
    )
    t0 = int(time.time() * 1000)
    try:
        with running_ingest(ingest_settings) as ingest:
            ingest.service.source.pause()  # type: ignore[union-attr]  # one batch for all
            for i in range(40):
                publisher.send(f"fs/v1/{site}/{dev}/telemetry", {"ts": t0 + i, "seq": i, "v": {}})
            publisher.send(
                f"fs/v1/{site}/{dev}/event",
                {"ts": t0 + 40, "seq": 40, "type": "fault", "detail": "poison"},
            )
            publisher.send(
                f"fs/v1/{site}/{dev}/event",
                {"ts": t0 + 41, "seq": 41, "type": "fault", "detail": "x"},
            )
            ingest.service.source.resume()  # type: ignore[union-attr]
            wait_for(lambda: stored(db, dev) == 40)
            wait_for(
                lambda: (
                    query(
                        db,
                        "SELECT count(*) FROM rejects WHERE topic = %s",
                        (f"fs/v1/{site}/{dev}/event",),
                    )[0][0]
                    == 1
                )
            )
        # Restarted: the refused message was acknowledged, so it is not redelivered.
        with running_ingest(ingest_settings):
            publisher.send(f"fs/v1/{site}/{dev}/telemetry", {"ts": t0 + 50, "seq": 50, "v": {}})
            wait_for(lambda: stored(db, dev) == 41)
    finally:
        execute(db, "DROP TRIGGER IF EXISTS test_refuse_poison ON device_events")
    rejects = query(
        db, "SELECT reason, detail FROM rejects WHERE topic LIKE %s", (f"fs/v1/{site}/%",)
    )
    assert len(rejects) == 1
    assert rejects[0][0] == "bad_payload"
    assert "refused by a trigger" in rejects[0][1]
    events = query(db, "SELECT detail FROM device_events WHERE device_id = %s", (dev,))
    assert [e[0] for e in events] == ["x"]


@pytest.mark.skipif(shutil.which("mosquitto") is None, reason="needs the mosquitto binary")
def test_a_broker_outage_is_not_the_estate_going_offline(db: str, tmp_path: Path) -> None:
    """While ingest cannot reach its broker it hears nobody: no device is judged
    silent for that. Once back, a device that still sends nothing is raised,
    later by the outage's length."""
    site = f"K{uuid.uuid4().hex[:8]}"
    devices = [{**device(site), "id": f"{site}-H{i}", "interval_s": 1} for i in range(3)]
    register(db, devices)
    broker = EmbeddedBroker(tmp_path / "broker", port=free_port())
    url = broker.start()
    settings = Settings(
        mqtt_url=url, database_url=db, mqtt_client_id=f"deaf-{site}", ingest_mode="single"
    )

    def offline() -> int:
        return int(
            query(
                db,
                "SELECT count(*) FROM alarms WHERE site_id = %s AND type = 'offline'",
                (site,),
            )[0][0]
        )

    def heartbeat() -> None:
        pub = Publisher(url)
        now = int(time.time() * 1000)
        for i, d in enumerate(devices):
            pub.send(f"fs/v1/{site}/{d['id']}/telemetry", {"ts": now, "seq": i + 1, "v": {}})
        pub.close()

    try:
        with running_ingest(settings) as ingest:
            assert ingest.service is not None
            wait_for(lambda: ingest.service is not None and ingest.service.source.subscribed)
            heartbeat()
            wait_for(lambda: stored_site(db, site) == 3)
            broker.stop()
            time.sleep(6)  # twice the devices' 3 s offline limit
            assert offline() == 0
            broker.start()
            wait_for(
                lambda: ingest.service is not None and ingest.service.source.subscribed, timeout=40
            )
            time.sleep(1.5)
            assert offline() == 0  # the outage was credited: each still has its 3 s
            wait_for(lambda: offline() >= 3, timeout=20)  # and then they are silent
    finally:
        broker.stop()


def test_a_retained_reject_is_kept_once_across_reconnections(
    db: str, mqtt_url: str, publisher: Publisher, site: str
) -> None:
    """The broker sends a retained message again at every subscription: a retained
    status of an unregistered device is one reject, not one per reconnection."""
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    from firesafe.settings import MqttEndpoint
    from tests.helpers import clear_retained

    register(db, [device(site)])
    topic = f"fs/v1/{site}/{site}-NOBODY/status"
    ep = MqttEndpoint.parse(mqtt_url)
    retainer = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"retain-{site}")
    retainer.connect(ep.host, ep.port)
    retainer.loop_start()
    retainer.publish(topic, b"online", qos=1, retain=True).wait_for_publish(10)
    proxy = CuttableProxy(ep.host, ep.port)
    client_id = f"retained-{site}"
    settings = Settings(
        mqtt_url=f"mqtt://127.0.0.1:{proxy.port}",
        database_url=db,
        mqtt_client_id=client_id,
        ingest_mode="single",
    )

    def kept() -> int:
        return int(query(db, "SELECT count(*) FROM rejects WHERE topic = %s", (topic,))[0][0])

    try:
        with running_ingest(settings):
            wait_for(lambda: kept() == 1, timeout=30)
            for _ in range(2):  # the broker connection lost and found again, twice
                proxy.cut()
                time.sleep(0.5)
                proxy.restore()
                drain(db, publisher, site)  # the retained copy came again before this
        assert kept() == 1
    finally:
        retainer.loop_stop()
        retainer.disconnect()
        clear_retained(mqtt_url, topic)
        proxy.close()
        forget_session(mqtt_url, client_id)


@pytest.mark.parametrize(
    "when", ["at start-up", "while running", "hung at start-up", "hung while running"]
)
def test_a_stop_is_honoured_while_the_database_is_away(
    db: str, mqtt_url: str, site: str, when: str
) -> None:
    """An outside check: SIGTERM (and SIGINT) did nothing for as long as the
    database was away, at start-up for 10 minutes, running until it came back
    (here: the drain's 10 s limit). Now ingest stops at once; what it had not
    committed stays with the broker. A server that hangs (connections accepted,
    nothing answered) held a stop for the connect timeout (10 s), 17 s while
    running (the recheck of that fix)."""
    from ingest.service import IngestService

    client_id = f"stop-{site}"
    proxy, settings = ingest_behind_a_database_proxy(db, mqtt_url, client_id)

    async def go() -> float:
        service = IngestService(settings)
        away = proxy.hold if when.startswith("hung") else proxy.cut
        if when.endswith("at start-up"):
            away()
        runner = asyncio.create_task(service.run())
        if when.endswith("while running"):
            await asyncio.wait_for(service.ready.wait(), 30)
            away()
        await asyncio.sleep(2.0)  # retrying by now
        assert not runner.done()
        asked = time.monotonic()
        service.request_stop()
        await asyncio.wait_for(runner, 20)
        return time.monotonic() - asked

    try:
        took = asyncio.run(go())
    finally:
        proxy.close()
        forget_session(mqtt_url, client_id)
    # (the drain waited its 10 s for a refusing database, 17-20 s for a hung one)
    # (a hung one while running: the drain gives up after DRAIN_STALL_S of no commit)
    assert took < (5.0 if when == "hung while running" else 3.0), took


def test_a_chore_waiting_on_a_frozen_database_ends_at_its_first_cancel(db: str) -> None:
    """An outside check froze the server (SIGSTOP) and sent SIGTERM 17-40 s
    later: ingest took 10.4-13.3 s to stop. The processor had given its
    connections up and was waiting to reconnect; the stop ended it, and the
    task group cancelled the linkage sender once, in a query on its own
    connection, which psycopg cancels politely: 5 s asking the server, 5 s
    more waiting. The chores run under `cancelled_promptly`: one cancel ends
    them at once (their connection closed)."""
    from storage.liveness import cancelled_promptly

    proxy, via_proxy = database_proxy(db)

    async def chore(started: asyncio.Event) -> None:
        conn = await psycopg.AsyncConnection.connect(via_proxy, autocommit=True)
        proxy.hold()  # the server freezes
        started.set()
        await conn.execute("SELECT 1")  # never answered

    async def go() -> float:
        started = asyncio.Event()
        task = asyncio.create_task(cancelled_promptly(chore(started)))
        await asyncio.wait_for(started.wait(), 10)
        await asyncio.sleep(0.3)
        began = time.monotonic()
        task.cancel()  # once, as a task group does
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return time.monotonic() - began

    try:
        took = asyncio.run(go())
    finally:
        proxy.close()
    assert took < 2.0, took  # (10 s without it)


def test_two_sessions_with_one_client_id_back_off_instead_of_storming(
    mqtt_url: str, site: str
) -> None:
    """An outside check: a wedged ingest process and the shard's new owner took
    one client id from each other about 1,000 times a second (logs of 12 MB in
    two minutes) until the wedged one was killed. A connection lost within
    STABLE_S of being made is retried with backoff, as a failed one is."""
    from firesafe.settings import MqttEndpoint
    from ingest.mqtt import MqttSource

    client_id = f"storm-{site}"
    connections = [0, 0]

    async def go() -> None:
        endpoint = MqttEndpoint.parse(mqtt_url)
        sources = [
            MqttSource(endpoint, client_id, lambda m: None, subscriptions=[f"fs/v1/{site}/#"])
            for _ in range(2)
        ]

        def counter(i: int) -> Callable[[], None]:
            def connected() -> None:
                connections[i] += 1

            return connected

        runs = [asyncio.create_task(s.run(counter(i))) for i, s in enumerate(sources)]
        await asyncio.sleep(8.0)
        for s in sources:
            await s.stop()
        await asyncio.gather(*runs)

    try:
        asyncio.run(go())
    finally:
        forget_session(mqtt_url, client_id)
    assert sum(connections) >= 2  # both did connect, and took the session from each other
    assert sum(connections) <= 25, connections  # a few a second at most (hundreds before)


def test_every_long_lived_connection_notices_a_silent_database(db: str, mqtt_url: str) -> None:
    """An outside check black-holed one ingest process's database connections:
    its writer noticed within 15 s, but the connection that sends evacuation
    commands waited on the kernel, and a confirmed fire's commands left 14
    minutes late. Every connection of ingest (writer, reader, commands,
    registry watch, housekeeping) and of the notifier is opened with
    client-side keepalives, a TCP user timeout and a connect timeout."""
    from ingest.service import IngestService
    from notify.service import Notifier
    from storage.liveness import CLIENT_KEEPALIVES

    wanted = {k: str(v) for k, v in CLIENT_KEEPALIVES.items()}
    service = IngestService(Settings(mqtt_url=mqtt_url, database_url=db))
    for dsn in (service.dsn, service.commands.dsn):
        assert wanted.items() <= conninfo.conninfo_to_dict(dsn).items()
    notifier = Notifier(db, smtp=None, smtp_from="x@example.org")
    assert wanted.items() <= conninfo.conninfo_to_dict(notifier.conninfo).items()
    mine = conninfo.make_conninfo(db, connect_timeout=3)  # what a DSN sets itself wins
    assert (
        conninfo.conninfo_to_dict(IngestService(Settings(database_url=mine)).dsn)["connect_timeout"]
        == "3"
    )


def test_a_chore_hung_on_the_database_holds_neither_the_loop_nor_its_end() -> None:
    """An outside check: a database that hung during the partitions check or
    the rejects prune (sync, in a worker thread) held a stop for ever:
    `asyncio.run` joins its thread pool at the end. A chore's thread is a
    daemon of its own, and the wait for it is cancelled at once."""
    import threading

    from ingest.housekeeping import _off_loop

    release = threading.Event()

    def hung() -> None:
        release.wait(60)

    async def stop_during_the_chore() -> None:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(_off_loop(hung), 0.2)

    started = time.monotonic()
    try:
        asyncio.run(stop_during_the_chore())  # (returned only when the pool's thread ended)
        assert time.monotonic() - started < 2.0
    finally:
        release.set()

    async def failing() -> None:
        def broken() -> None:
            raise psycopg.OperationalError("the chore's own error")

        with pytest.raises(psycopg.OperationalError, match="own error"):
            await _off_loop(broken)

    asyncio.run(failing())


def test_a_query_the_database_never_answers_is_cancelled_at_once(db: str) -> None:
    """psycopg meets a cancelled query by asking the server to cancel it and
    waiting for it to end, 10 s against a server that hangs (an outside check:
    a stop took 8-13 s when the database hung during a housekeeping query);
    `cancel_hung` has the connection closed instead."""
    from storage.liveness import cancel_hung

    proxy, via_proxy = database_proxy(db)

    async def go() -> float:
        conn = await psycopg.AsyncConnection.connect(via_proxy, autocommit=True)
        proxy.hold()
        query = asyncio.create_task(conn.execute("SELECT 1"))
        await asyncio.sleep(0.3)
        assert not query.done()
        started = time.monotonic()
        await cancel_hung([query])
        took = time.monotonic() - started
        assert query.cancelled()
        await conn.close()
        return took

    try:
        took = asyncio.run(go())
    finally:
        proxy.close()
    assert took < 2.0, took


def test_a_slow_step_goes_on_while_the_database_answers_and_ends_when_it_does_not(
    db: str, mqtt_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A step still running after DB_ANSWER_S has the server probed: a step that
    is only slow (a lock wait, a large takeover's restore) goes on; one whose
    database answers no probe (a partition, a hung server) ends as a lost
    connection, so the process stops reading what it cannot commit."""
    from ingest import database_link
    from ingest import service as ingest_service

    monkeypatch.setattr(database_link, "DB_ANSWER_S", 0.3)
    monkeypatch.setattr(database_link, "DB_PROBE_S", 1.0)
    proxy, settings = ingest_behind_a_database_proxy(db, mqtt_url, "probe-test")

    async def slow() -> str:
        await asyncio.sleep(1.5)  # five deadlines, each followed by a probe
        return "done"

    async def go() -> tuple[str, float]:
        service = ingest_service.IngestService(settings)
        assert await service.db.answered(slow) == "done"
        proxy.hold()
        started = time.monotonic()
        with pytest.raises(psycopg.OperationalError, match="does not answer"):
            await service.db.answered(slow)
        return "raised", time.monotonic() - started

    try:
        _, took = asyncio.run(go())
    finally:
        proxy.close()
    assert took < 1.5, took  # one deadline and one probe, not the step's end


def test_a_stop_is_honoured_while_single_mode_waits_for_shards(
    db: str, mqtt_url: str, site: str
) -> None:
    """An outside check: a single-mode process started beside a sharded one
    waited for the shards the other held, and SIGTERM did nothing (killed as
    stalled a minute later, with a traceback)."""
    from ingest.service import IngestService
    from storage.shards import SHARD_LOCK_CLASS

    settings = Settings(
        mqtt_url=mqtt_url, database_url=db, mqtt_client_id=f"wait-{site}", ingest_mode="single"
    )

    async def go() -> float:
        service = IngestService(settings)
        runner = asyncio.create_task(service.run())
        await asyncio.sleep(1.5)  # waiting for shard 0
        assert not runner.done()
        asked = time.monotonic()
        service.request_stop()
        await asyncio.wait_for(runner, 20)
        return time.monotonic() - asked

    with psycopg.connect(db, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s, 0)", (SHARD_LOCK_CLASS,))
        took = asyncio.run(go())
    assert took < 2.0, took
