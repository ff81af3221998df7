"""Alarms end to end through ingest (real broker and database): supervision,
the alarm lifecycle in the alarms tables, and evacuation linkage."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from typing import Any

import orjson
import paho.mqtt.client as paho
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from psycopg.rows import dict_row

import ingest.commands
from firesafe.settings import MqttEndpoint, Settings
from storage.queries import alarms as alarm_queries
from storage.queries.common import Scope
from tests.helpers import Publisher, drain, query, register, running_ingest, wait_for

pytestmark = pytest.mark.integration


class CommandListener:
    """A device-side client collecting the platform's commands for a site."""

    def __init__(self, url: str, site: str) -> None:
        ep = MqttEndpoint.parse(url)
        self.received: list[tuple[str, dict[str, Any], float]] = []
        self._lock = threading.Lock()
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=f"cmd-{uuid.uuid4().hex[:8]}"
        )
        self.client.on_message = self._on_message
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *args: subscribed.set()
        self.client.connect(ep.host, ep.port)
        self.client.loop_start()
        self.client.subscribe(f"fs/v1/{site}/+/cmd", qos=1)
        assert subscribed.wait(10), "no SUBACK from the broker"

    def _on_message(self, client: Any, userdata: Any, message: paho.MQTTMessage) -> None:
        with self._lock:
            self.received.append((message.topic, orjson.loads(message.payload), time.time()))

    def commands(self) -> list[tuple[str, dict[str, Any], float]]:
        with self._lock:
            return list(self.received)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def alarms(db: str, site: str) -> list[dict[str, Any]]:
    with psycopg.connect(db, autocommit=True, row_factory=dict_row) as conn:
        return conn.execute(
            "SELECT * FROM alarms WHERE site_id = %s ORDER BY created_at, id", (site,)
        ).fetchall()


def person_clears(db: str, alarm_id: str) -> None:
    """What POST /api/v1/alarms/{id}/clear does."""

    async def go() -> None:
        async with await psycopg.AsyncConnection.connect(db, row_factory=dict_row) as conn:
            await alarm_queries.clear(
                conn, scope=Scope.everything(), alarm_id=alarm_id, actor="operator-1", note="ok"
            )

    asyncio.run(go())


def now_ms() -> int:
    return int(time.time() * 1000)


def test_silent_device_goes_offline_and_comes_back(
    db: str, ingest_settings: Settings, publisher: Publisher, site: str
) -> None:
    register(
        db,
        [
            {
                "id": f"{site}-H1",
                "site": site,
                "building": "B",
                "floor": "1",
                "zone": "Z",
                "kind": "heat",
                "interval_s": 1,
            }
        ],
    )
    started = query(db, "SELECT now()")[0][0]  # supervision starts after this
    with running_ingest(ingest_settings):
        rows = wait_for(lambda: [a for a in alarms(db, site) if a["type"] == "offline"], timeout=10)
        a = rows[0]
        assert (a["verdict"], a["status"], a["reason"]) == ("confirmed", "active", "silent")
        # Not before 3 x interval_s of silence (arrival time; no upper wall-clock bound:
        # the wait above bounds it, on a loaded machine too).
        assert (a["opened_at"] - started).total_seconds() >= 3 - 0.05
        assert a["opened_at"] == a["confirmed_at"]
        publisher.send(f"fs/v1/{site}/{site}-H1/telemetry", {"ts": now_ms(), "seq": 1, "v": {}})
        wait_for(lambda: alarms(db, site)[0]["status"] == "cleared")
    assert len([a for a in alarms(db, site) if a["type"] == "offline"]) >= 1


def test_last_will_raises_offline_at_once(
    db: str, ingest_settings: Settings, publisher: Publisher, site: str
) -> None:
    register(
        db,
        [
            {
                "id": f"{site}-E1",
                "site": site,
                "building": "B",
                "floor": "1",
                "zone": "Z",
                "kind": "evac",
            }
        ],
    )
    with running_ingest(ingest_settings):
        publisher.send(f"fs/v1/{site}/{site}-E1/status", "offline")
        rows = wait_for(lambda: alarms(db, site), timeout=10)
        assert (rows[0]["type"], rows[0]["reason"], rows[0]["verdict"]) == (
            "offline",
            "last_will",
            "confirmed",
        )
        publisher.send(f"fs/v1/{site}/{site}-E1/status", "online")
        wait_for(lambda: alarms(db, site)[0]["status"] == "cleared")
        log = query(
            db,
            "SELECT action, actor FROM alarm_log WHERE alarm_id = %s ORDER BY id",
            (rows[0]["id"],),
        )
        assert log == [("opened", "system"), ("cleared", "system")]


def device_state(db: str, device_id: str) -> str:
    from storage.queries.devices import get_device

    async def get() -> str:
        async with await psycopg.AsyncConnection.connect(db, row_factory=dict_row) as conn:
            row = await get_device(conn, scope=Scope.everything(), device_id=device_id)
            return str(row["state"])

    return asyncio.run(get())


def test_a_device_heard_after_its_will_is_online_again(
    db: str, ingest_settings: Settings, publisher: Publisher, site: str
) -> None:
    """An outside check: after its will (`offline`), a device sending
    telemetry had its offline alarm cleared but kept the state `offline` until
    it published `online` itself."""
    dev = f"{site}-H1"
    register(db, [{"id": dev, "site": site, "building": "B", "floor": "1", "zone": "Z",
                   "kind": "heat"}])  # fmt: skip
    with running_ingest(ingest_settings):
        publisher.send(f"fs/v1/{site}/{dev}/status", "offline")
        wait_for(lambda: alarms(db, site), timeout=10)
        assert device_state(db, dev) == "offline"
        publisher.send(
            f"fs/v1/{site}/{dev}/telemetry", {"ts": now_ms(), "seq": 1, "v": {"temperature": 21.0}}
        )
        wait_for(lambda: alarms(db, site)[0]["status"] == "cleared")
        wait_for(lambda: device_state(db, dev) == "online", timeout=10)


def test_fault_lifecycle_one_open_alarm_and_refire(
    db: str, ingest_settings: Settings, publisher: Publisher, site: str
) -> None:
    dev = f"{site}-S1"
    register(
        db, [{"id": dev, "site": site, "building": "B", "floor": "1", "zone": "Z", "kind": "smoke"}]
    )
    t = now_ms()
    topic = f"fs/v1/{site}/{dev}/event"
    with running_ingest(ingest_settings):
        publisher.send(topic, {"ts": t, "seq": 1, "type": "fault", "detail": "chamber"})
        publisher.send(topic, {"ts": t + 1, "seq": 2, "type": "fault"})  # still the same fault
        drain(db, publisher, site)  # both events committed
        faults = [a for a in alarms(db, site) if a["type"] == "fault"]
        assert len(faults) == 1
        assert (faults[0]["verdict"], faults[0]["status"]) == ("confirmed", "active")
        publisher.send(topic, {"ts": t + 2, "seq": 3, "type": "restore"})
        wait_for(lambda: alarms(db, site)[0]["status"] == "cleared")
        publisher.send(
            topic, {"ts": t + 3, "seq": 4, "type": "fault"}
        )  # a cleared alarm can fire again
        wait_for(lambda: len([a for a in alarms(db, site) if a["type"] == "fault"]) == 2)
    rows = [a for a in alarms(db, site) if a["type"] == "fault"]
    assert [r["status"] for r in rows] == ["cleared", "active"]


def estate(site: str) -> list[dict[str, object]]:
    base = {"site": site, "building": "B1", "floor": "2"}
    return [
        {**base, "id": f"{site}-SD1", "zone": "West", "kind": "smoke"},
        {**base, "id": f"{site}-SD2", "zone": "West", "kind": "smoke"},
        {**base, "id": f"{site}-SD3", "zone": "East", "kind": "smoke"},
        {**base, "id": f"{site}-CP1", "zone": "East", "kind": "mcp"},
        {
            **base,
            "id": f"{site}-EX1",
            "zone": "Hall",
            "kind": "evac",
            "routes": {"left": "West", "right": "East"},
        },
        {
            **base,
            "id": f"{site}-EX2",
            "zone": "Hall",
            "kind": "evac",
            "routes": {"left": "Hall", "right": "West"},
        },
        {**base, "id": f"{site}-EX3", "zone": "Hall", "kind": "evac"},
        {
            "site": site,
            "building": "B2",
            "floor": "1",
            "id": f"{site}-EXB2",
            "zone": "Z",
            "kind": "evac",
            "routes": {"left": "Z", "right": "Z"},
        },
    ]


def test_call_point_confirms_fire_and_commands_the_buildings_signs(
    db: str,
    ingest_settings: Settings,
    publisher: Publisher,
    mqtt_url: str,
    site: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Every command is sent because ingest wakes the sender once it is committed,
    # never because the sender happened to look again (a woken sender that finds
    # nothing waits this long: the signs a second late, or here five minutes).
    monkeypatch.setattr(ingest.commands, "IDLE_POLL_S", 300.0)
    register(db, estate(site))
    listener = CommandListener(mqtt_url, site)
    try:
        with running_ingest(ingest_settings):
            publisher.send(
                f"fs/v1/{site}/{site}-CP1/event", {"ts": now_ms(), "seq": 1, "type": "activated"}
            )
            wait_for(lambda: len(listener.commands()) >= 3, timeout=10)
            cmds = {t.split("/")[3]: (p, at) for t, p, at in listener.commands()}
            # East is on fire: EX1 (left West, right East) points left; EX2 neither: both;
            # EX3 has no routes: both. The other building's sign is not commanded.
            assert cmds[f"{site}-EX1"][0]["direction"] == "left"
            assert cmds[f"{site}-EX2"][0]["direction"] == "both"
            assert cmds[f"{site}-EX3"][0]["direction"] == "both"
            assert f"{site}-EXB2" not in cmds
            assert all(p["cmd"] == "emergency" and p["alarm_id"] for p, _ in cmds.values())
            fire = next(a for a in alarms(db, site) if a["type"] == "fire")
            assert (fire["verdict"], fire["reason"], fire["status"]) == (
                "confirmed",
                "call_point",
                "active",
            )
            assert cmds[f"{site}-EX1"][0]["alarm_id"] == fire["id"]
            # A call point's reset does not clear the alarm; fire alarms latch.
            publisher.send(
                f"fs/v1/{site}/{site}-CP1/event", {"ts": now_ms(), "seq": 2, "type": "reset"}
            )
            drain(db, publisher, site)  # the reset is committed
            assert next(a for a in alarms(db, site) if a["type"] == "fire")["status"] == "active"
            # A person clears it: signs go back to normal.
            person_clears(db, fire["id"])
            wait_for(
                lambda: sum(p["cmd"] == "normal" for _, p, _ in listener.commands()) == 3,
                timeout=15,
            )
            assert (
                query(db, "SELECT count(*) FROM linkage_commands WHERE site_id = %s", (site,))[0][0]
                == 6
            )
    finally:
        listener.close()


def test_a_sign_back_or_added_during_a_fire_is_commanded_again(
    db: str, ingest_settings: Settings, publisher: Publisher, mqtt_url: str, site: str
) -> None:
    """An outside check: a sign offline when its building's fire was confirmed,
    or rebooted during it (it shows normal again), was never commanded again;
    and one registered in a burning building stayed dark until ingest
    restarted. A sign that says `online` again, or whose offline alarm clears,
    is told its state again (its emergency, or the `normal` after it); one
    the registry adds is told at once."""
    register(db, estate(site))
    listener = CommandListener(mqtt_url, site)

    def told(device: str) -> list[dict[str, Any]]:
        return [p for t, p, _ in listener.commands() if t.split("/")[3] == device]

    try:
        with running_ingest(ingest_settings):
            publisher.send(
                f"fs/v1/{site}/{site}-CP1/event", {"ts": now_ms(), "seq": 1, "type": "activated"}
            )
            wait_for(lambda: len(listener.commands()) >= 3, timeout=10)
            publisher.send(f"fs/v1/{site}/{site}-EX3/status", "online")  # restarted
            publisher.send(f"fs/v1/{site}/{site}-EXB2/status", "online")  # not burning
            wait_for(lambda: len(told(f"{site}-EX3")) == 2, timeout=10)
            assert told(f"{site}-EX3")[1]["cmd"] == "emergency"
            register(
                db,
                [
                    {
                        "site": site,
                        "building": "B1",
                        "floor": "2",
                        "id": f"{site}-EX4",
                        "zone": "Hall",
                        "kind": "evac",
                        "routes": {"left": "East"},
                    }
                ],
            )
            wait_for(lambda: len(told(f"{site}-EX4")) == 1, timeout=10)
            assert told(f"{site}-EX4")[0]["direction"] == "right"
            drain(db, publisher, site)
            assert told(f"{site}-EXB2") == []
            assert len(told(f"{site}-EX1")) == len(told(f"{site}-EX2")) == 1
            # Over: a sign away when `normal` went out is told again when back.
            fire = next(a for a in alarms(db, site) if a["type"] == "fire")
            person_clears(db, fire["id"])
            wait_for(lambda: len(told(f"{site}-EX3")) == 3, timeout=15)
            publisher.send(f"fs/v1/{site}/{site}-EX3/status", "online")
            wait_for(lambda: len(told(f"{site}-EX3")) == 4, timeout=10)
            assert [p["cmd"] for p in told(f"{site}-EX3")[2:]] == ["normal", "normal"]
            drain(db, publisher, site)
            assert told(f"{site}-EXB2") == []  # never commanded: it shows normal
    finally:
        listener.close()


def test_two_detectors_in_a_zone_confirm_by_coincidence(
    db: str, ingest_settings: Settings, publisher: Publisher, mqtt_url: str, site: str
) -> None:
    register(db, estate(site))
    listener = CommandListener(mqtt_url, site)
    t = now_ms()
    try:
        with running_ingest(ingest_settings):
            for i in range(6):  # clean air first
                for dev in ("SD1", "SD2"):
                    publisher.send(
                        f"fs/v1/{site}/{site}-{dev}/telemetry",
                        {
                            "ts": t + i * 10_000,
                            "seq": i,
                            "v": {"obscuration": 0.05, "temperature": 21.0},
                        },
                    )
            t2 = t + 60_000
            for i, obscuration in enumerate([4.0, 5.0, 6.5]):
                for dev in ("SD1", "SD2"):
                    publisher.send(
                        f"fs/v1/{site}/{site}-{dev}/telemetry",
                        {
                            "ts": t2 + i * 5_000,
                            "seq": 10 + i,
                            "v": {"obscuration": obscuration, "temperature": 21.5},
                        },
                    )
            fires = wait_for(
                lambda: [
                    a
                    for a in alarms(db, site)
                    if a["type"] == "fire" and a["verdict"] == "confirmed"
                ],
                timeout=10,
            )
            wait_for(
                lambda: (
                    len(
                        [
                            a
                            for a in alarms(db, site)
                            if a["type"] == "fire" and a["verdict"] == "confirmed"
                        ]
                    )
                    == 2
                )
            )
            assert {a["device_id"] for a in alarms(db, site) if a["type"] == "fire"} == {
                f"{site}-SD1",
                f"{site}-SD2",
            }
            assert fires[0]["zone"] == "West"
            # West burns: EX1 points right, EX2 (right leads to West) points left.
            cmds = wait_for(lambda: {t.split("/")[3]: p for t, p, _ in listener.commands()})
            assert cmds[f"{site}-EX1"]["direction"] == "right"
            assert cmds[f"{site}-EX2"]["direction"] == "left"
    finally:
        listener.close()


def test_device_fire_alarm_event_alone_is_not_a_verdict(
    db: str, ingest_settings: Settings, publisher: Publisher, site: str
) -> None:
    register(db, estate(site))
    t = now_ms()
    with running_ingest(ingest_settings):
        publisher.send(f"fs/v1/{site}/{site}-SD3/event", {"ts": t, "seq": 1, "type": "fire_alarm"})
        rows = wait_for(lambda: [a for a in alarms(db, site) if a["type"] == "fire"])
        assert rows[0]["verdict"] == "pending"


def test_a_broken_message_still_shows_the_device_is_alive(
    db: str, ingest_settings: Settings, publisher: Publisher, site: str
) -> None:
    register(db, [{"id": f"{site}-H2", "site": site, "building": "B", "floor": "1",
                   "zone": "Z", "kind": "heat", "interval_s": 1}])  # fmt: skip
    with running_ingest(ingest_settings):
        wait_for(lambda: [a for a in alarms(db, site) if a["type"] == "offline"], timeout=10)
        publisher.send(f"fs/v1/{site}/{site}-H2/telemetry", b"{broken")  # rejected, but heard
        wait_for(lambda: alarms(db, site)[0]["status"] == "cleared")
    reasons = query(db, "SELECT reason FROM rejects WHERE device_id = %s", (f"{site}-H2",))
    assert reasons == [("invalid_json",)]


def test_an_alarm_is_never_cleared_before_it_was_opened(db: str, site: str) -> None:
    """A clear (or a suppression) dated before the opening, as a late message's
    arrival time can be, is recorded at the opening: never a negative duration."""
    from dataclasses import replace

    from tests.test_notify_support import call_point, transition, write_alarms

    call_point(db, f"{site}-M1", site)
    call_point(db, f"{site}-M2", site)
    opened = transition(f"{site}-M1", site, type="offline", reason="silent")
    write_alarms(db, opened)
    write_alarms(
        db, replace(opened, action="clear", reason="back_online", at_ms=opened.at_ms - 20_000)
    )
    pending = transition(f"{site}-M2", site, verdict="pending", reason="obscuration")
    write_alarms(db, pending)
    write_alarms(
        db, replace(pending, action="verdict", verdict="suppressed", at_ms=pending.at_ms - 5_000)
    )
    rows = query(
        db,
        "SELECT device_id, status, cleared_at = opened_at FROM alarms WHERE site_id = %s "
        "ORDER BY device_id",
        (site,),
    )
    assert rows == [(f"{site}-M1", "cleared", True), (f"{site}-M2", "cleared", True)]


def test_linkage_retries_through_an_outage_without_a_line_each_second(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The sender retries every second while its database is away: the first
    failure is logged at once, the rest summed up (one line per 10 s)."""
    from firesafe.embedded import free_port

    sender = ingest.commands.CommandSender(
        lambda site: None,
        f"postgresql://nobody@127.0.0.1:{free_port()}/x?connect_timeout=1",
        lambda: None,
        application_name="test-linkage",
    )

    async def run_a_while() -> None:
        task = asyncio.create_task(sender.run())
        sender.wake()
        await asyncio.sleep(3.5)
        sender.stop()
        await task

    asyncio.run(run_a_while())
    lines = [
        r for r in caplog.records if "linkage sender: database or broker away" in r.getMessage()
    ]
    assert sender._not_sent.total >= 3  # it did retry
    assert len(lines) == 1


def test_an_alarm_of_what_happened_before_a_move_keeps_the_old_site(
    db: str, ingest_settings: Settings, publisher: Publisher, site: str
) -> None:
    """A detector's fault, sent before its device was moved to another site but
    judged after (its event waits for a zone neighbour's readings to catch up),
    is the old site's alarm: its managers see it, the new site's do not. An
    outside check found it filed under the new site."""
    other = f"{site}x"
    base = {"site": site, "building": "B", "floor": "1", "zone": "Z", "kind": "smoke"}
    mover, neighbour = f"{site}-M", f"{site}-N"
    register(db, [{**base, "id": mover}, {**base, "id": neighbour}])
    register(db, [{**base, "site": other, "id": f"{other}-anchor"}])
    t = now_ms()
    with running_ingest(ingest_settings):
        publisher.send(f"fs/v1/{site}/{neighbour}/telemetry", {"ts": t, "seq": 1, "v": {}})
        for i in range(3):
            publisher.send(
                f"fs/v1/{site}/{mover}/telemetry",
                {"ts": t + 1000 * i, "seq": i + 1, "v": {"obscuration": 0.1}},
            )
        publisher.send(f"fs/v1/{site}/{mover}/event", {"ts": t + 2500, "seq": 4, "type": "fault"})
        drain(db, publisher, site)
        # The fault waits for the neighbour (behind in event time) to catch up.
        assert not alarms(db, site)
        register(db, [{**base, "site": other, "id": mover}])
        wait_for(
            lambda: query(
                db,
                "SELECT 1 FROM devices WHERE id = %s AND site_id = %s",
                (mover, other),
            )
        )
        time.sleep(1.5)  # ingest reloads the registry on its notification
        publisher.send(f"fs/v1/{site}/{neighbour}/telemetry", {"ts": t + 5000, "seq": 2, "v": {}})
        wait_for(lambda: [a for a in alarms(db, site) + alarms(db, other) if a["type"] == "fault"])
    faults = [a for a in alarms(db, site) + alarms(db, other) if a["type"] == "fault"]
    assert [(a["device_id"], a["site_id"]) for a in faults] == [(mover, site)]


def test_a_verdict_after_a_move_answers_where_the_alarm_was_opened(db: str, site: str) -> None:
    """A fire opened (pending) before its detector was moved and confirmed after:
    the confirmation is applied where the alarm is, and the linkage that
    follows it (the buildings a batch's fires changed) is that building's,
    not the new one's."""
    from dataclasses import replace

    from storage import ingest_store

    dev = f"{site}-S1"
    register(
        db,
        [{"id": dev, "site": site, "building": "B1", "floor": "1", "zone": "Z", "kind": "smoke"}],
    )
    opened = ingest_store.AlarmWrite(
        device_id=dev,
        site=site,
        building="B1",
        floor="1",
        zone="Z",
        alarm_type="fire",
        action="open",
        verdict="pending",
        reason="obscuration",
        at_ms=now_ms(),
        detail={},
    )
    moved = replace(opened, site=f"{site}x", building="B9", action="verdict", verdict="confirmed")

    async def go() -> list[ingest_store.AppliedAlarm]:
        async with await psycopg.AsyncConnection.connect(db) as conn, conn.transaction():
            return await ingest_store.apply_alarm_writes(conn, [opened, moved])

    first, confirmed = asyncio.run(go())
    assert (first.write.site, first.write.building) == (site, "B1")
    assert confirmed.logged == "confirmed"
    assert (confirmed.write.site, confirmed.write.building) == (site, "B1")


def test_a_retained_will_replayed_at_a_restart_is_old_news_for_a_device_heard_since(
    db: str, ingest_settings: Settings, publisher: Publisher, site: str
) -> None:
    """The broker replays a retained `offline` at every (re)subscription; a device
    that reconnected without a retained `online` leaves it there. An outside
    check paged two live devices offline at each database restart (ingest
    starts its sessions again). A device heard within its supervision limit
    before the replay is not raised; one never heard is, at once."""
    base = {"site": site, "building": "B", "floor": "1", "zone": "Z", "kind": "smoke"}
    alive, gone = f"{site}-A1", f"{site}-G1"
    register(db, [{**base, "id": alive}, {**base, "id": gone}])
    try:
        with running_ingest(ingest_settings):
            publisher.send(f"fs/v1/{site}/{alive}/status", "offline", retain=True)
            wait_for(lambda: alarms(db, site), timeout=10)  # a will as it happens: raised
            publisher.send(f"fs/v1/{site}/{alive}/telemetry", {"ts": now_ms(), "seq": 1, "v": {}})
            wait_for(lambda: alarms(db, site)[0]["status"] == "cleared")
        publisher.send(f"fs/v1/{site}/{gone}/status", "offline", retain=True)
        with running_ingest(ingest_settings):
            wait_for(lambda: any(a["device_id"] == gone for a in alarms(db, site)), timeout=10)
            drain(db, publisher, site)
        opened = [(a["device_id"], a["reason"]) for a in alarms(db, site)]
        assert opened == [(alive, "last_will"), (gone, "last_will")]
    finally:
        for dev in (alive, gone):
            publisher.send(f"fs/v1/{site}/{dev}/status", b"", retain=True)
