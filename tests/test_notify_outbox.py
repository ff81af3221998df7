"""The outbox: rows written by the alarm_log trigger in the transition's own
transaction (ingest's write path and the API's), which transitions go where,
storms, and escalation bookkeeping. No notifier runs here."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from psycopg.rows import dict_row

from storage import ingest_store
from storage.queries import notifications as notify_q
from tests.helpers import query, register
from tests.test_notify_support import (
    add_rule,
    add_target,
    call_point,
    deliveries,
    person,
    transition,
    write_alarms,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def hooks(db: str) -> str:
    add_target(db, "duty", url="http://127.0.0.1:9/duty")
    add_target(db, "chief", url="http://127.0.0.1:9/chief")
    return db


def test_outbox_row_is_written_and_rolled_back_with_the_transition(hooks: str, site: str) -> None:
    db = hooks
    add_rule(db, "fires", types=["fire"], targets=["duty"])
    call_point(db, f"{site}-M1", site)

    async def go(commit: bool) -> tuple[list[dict[str, object]], list[tuple[object, ...]]]:
        async with await psycopg.AsyncConnection.connect(db) as conn:
            await conn.execute("BEGIN")
            await ingest_store.apply_alarm_writes(conn, [transition(f"{site}-M1", site)])
            async with conn.cursor(row_factory=dict_row) as cur:
                await cur.execute(
                    "SELECT n.event, n.target_id, n.alarm->>'id' AS alarm, a.id AS real "
                    "FROM notifications n JOIN alarms a ON a.id = n.alarm_id"
                )
                inside = await cur.fetchall()
            # Another session sees nothing before the commit.
            outside = query(db, "SELECT id FROM notifications")
            await conn.execute("COMMIT" if commit else "ROLLBACK")
            return inside, outside

    inside, outside = asyncio.run(go(commit=False))
    assert [(r["event"], r["target_id"]) for r in inside] == [("confirmed", "duty")]
    assert inside[0]["alarm"] == inside[0]["real"]
    assert outside == []
    assert query(db, "SELECT count(*) FROM notifications") == [(0,)]
    assert query(db, "SELECT count(*) FROM alarms") == [(0,)]

    inside, _ = asyncio.run(go(commit=True))
    rows = deliveries(db)
    assert [(r["event"], r["target_id"], r["status"]) for r in rows] == [
        ("confirmed", "duty", "pending")
    ]
    assert rows[0]["alarm"]["id"] == inside[0]["real"]


def test_notify_is_sent_at_commit_only(hooks: str, site: str) -> None:
    db = hooks
    add_rule(db, "fires", types=["fire"], targets=["duty"])
    call_point(db, f"{site}-M1", site)
    with psycopg.connect(db, autocommit=True) as listener:
        listener.execute("LISTEN firesafe_notify")
        with psycopg.connect(db) as writer:
            writer.execute(
                "INSERT INTO alarms (id, device_id, site_id, building, floor, zone, type, "
                "verdict, reason, opened_at) VALUES ('X1', %s, %s, 'B1', '2', 'Z1', 'fire', "
                "'confirmed', 'call_point', now())",
                (f"{site}-M1", site),
            )
            writer.execute(
                "INSERT INTO alarm_log (alarm_id, action, actor) VALUES ('X1', 'opened', 'system')"
            )
            assert list(listener.notifies(timeout=0.3)) == []
            writer.commit()
        got = list(listener.notifies(timeout=5, stop_after=1))
    assert [n.channel for n in got] == ["firesafe_notify"]


def test_transitions_and_who_hears_of_them(hooks: str, site: str) -> None:
    db = hooks
    add_rule(db, "early", types=["fire"], verdicts=["pending", "confirmed"], targets=["duty"])
    add_rule(db, "confirmed-only", types=["fire"], targets=["chief"])
    register(
        db,
        [
            {
                "id": f"{site}-S{i}",
                "site": site,
                "building": "B1",
                "floor": "2",
                "zone": "Z1",
                "kind": "smoke",
            }
            for i in (1, 2)
        ],
    )
    # S1: pending, then confirmed, acknowledged, cleared by people.
    (a1,) = write_alarms(
        db, transition(f"{site}-S1", site, verdict="pending", reason="obscuration")
    )
    write_alarms(
        db, transition(f"{site}-S1", site, action="verdict", verdict="confirmed", reason="x")
    )
    person(db, a1, "ack")
    person(db, a1, "clear")
    # S2: pending, then judged false (suppressed): only who heard of it hears it ended.
    (a2,) = write_alarms(
        db, transition(f"{site}-S2", site, verdict="pending", reason="obscuration")
    )
    write_alarms(
        db,
        transition(f"{site}-S2", site, action="verdict", verdict="suppressed", reason="steam"),
    )
    got1 = [(r["event"], r["target_id"]) for r in deliveries(db, a1)]
    assert got1 == [
        ("opened", "duty"),
        ("confirmed", "chief"),
        ("confirmed", "duty"),
        ("acknowledged", "chief"),
        ("acknowledged", "duty"),
        ("cleared", "chief"),
        ("cleared", "duty"),
    ]
    rows = deliveries(db, a1)
    assert rows[3]["alarm"]["status"] == "acknowledged"
    assert rows[3]["alarm"]["acknowledged_by"] == "duty-officer"
    assert rows[1]["alarm"]["status"] == "active"  # a snapshot of the moment
    got2 = [(r["event"], r["target_id"]) for r in deliveries(db, a2)]
    assert got2 == [("opened", "duty"), ("cleared", "duty")]


def test_rules_match_site_type_and_verdict(hooks: str, site: str) -> None:
    db = hooks
    other = site + "x"
    add_rule(db, "here", sites=[site], types=["fire", "fault"], targets=["duty"])
    call_point(db, f"{site}-M1", site)
    call_point(db, f"{other}-M1", other)
    (here,) = write_alarms(db, transition(f"{site}-M1", site))
    (there,) = write_alarms(db, transition(f"{other}-M1", other))
    (fault,) = write_alarms(db, transition(f"{site}-M1", site, type="fault", reason="device"))
    (offline,) = write_alarms(db, transition(f"{site}-M1", site, type="offline", reason="silent"))
    assert [r["target_id"] for r in deliveries(db, here)] == ["duty"]
    assert deliveries(db, there) == []
    assert [r["event"] for r in deliveries(db, fault)] == ["confirmed"]
    assert deliveries(db, offline) == []


def test_one_notification_per_transition_and_grouped_offline_storms(hooks: str, site: str) -> None:
    db = hooks
    add_rule(db, "offline", types=["offline", "fire"], targets=["duty"])
    devices = [f"{site}-M{i}" for i in range(20)]
    for d in devices:
        call_point(db, d, site)
    # The same confirmation arriving again and again (every reading) is one transition.
    (fire,) = write_alarms(db, transition(devices[0], site))
    for _ in range(5):
        assert write_alarms(db, transition(devices[0], site)) == []
    assert len(deliveries(db, fire)) == 1
    # A site going silent: one grouping alarm, members carry detail.cause.
    (group,) = write_alarms(db, transition(devices[1], site, type="offline", reason="site_silent"))
    members = write_alarms(
        db,
        *[
            transition(d, site, type="offline", reason="silent", detail={"cause": "site_silent"})
            for d in devices[2:]
        ],
    )
    assert len(members) == len(devices) - 2
    offline = query(
        db,
        "SELECT n.alarm_id FROM notifications n JOIN alarms a ON a.id = n.alarm_id "
        "WHERE a.type = 'offline'",
    )
    assert offline == [(group,)]


def test_a_device_offline_notification_is_held_then_dropped_when_grouped_or_back(
    hooks: str, site: str
) -> None:
    """A device's own `offline` is held for one reporting interval (+5 s): a
    device back within it notifies nothing (not even its `cleared`), and one
    linked to its site's grouping alarm meanwhile is cancelled; other alarms
    go at once."""
    db = hooks
    add_rule(
        db,
        "offline",
        types=["offline", "fire"],
        targets=["duty"],
        escalate_after_s=60,
        escalate_to=["chief"],
    )
    devices = [f"{site}-M{i}" for i in range(4)]

    def escalates_in_s(alarm: str) -> float:
        ((s,),) = query(
            db,
            "SELECT extract(epoch FROM next_at - now()) FROM notify_escalations "
            "WHERE alarm_id = %s",
            (alarm,),
        )
        return float(s)

    for d in devices:
        call_point(db, d, site)  # interval_s: the call point's default, 60 s

    def held_s(alarm: str) -> float:
        ((s,),) = query(
            db,
            "SELECT extract(epoch FROM next_attempt_at - created_at) FROM notifications "
            "WHERE alarm_id = %s",
            (alarm,),
        )
        return float(s)

    (fire,) = write_alarms(db, transition(devices[0], site))
    assert held_s(fire) < 1.0
    assert 55.0 <= escalates_in_s(fire) <= 61.0
    (flap,) = write_alarms(db, transition(devices[1], site, type="offline", reason="silent"))
    assert 64.0 <= held_s(flap) <= 66.0
    assert 120.0 <= escalates_in_s(flap) <= 126.0  # escalation counts from the hold's end
    write_alarms(
        db, transition(devices[1], site, type="offline", action="clear", reason="back_online")
    )
    assert [(r["event"], r["status"]) for r in deliveries(db, flap)] == [("confirmed", "cancelled")]
    (member,) = write_alarms(db, transition(devices[2], site, type="offline", reason="silent"))

    async def group_and_link() -> str:
        async with await psycopg.AsyncConnection.connect(db) as conn, conn.transaction():
            group = await ingest_store.open_site_alarm(
                conn, site=site, reason="site_silent", at_ms=0, detail={"silent": 3, "of": 4}
            )
            assert group is not None
            assert await ingest_store.link_cause(conn, site=site, cause=group, since_ms=0) == 1
            return group

    group = asyncio.run(group_and_link())
    assert [r["status"] for r in deliveries(db, member)] == ["cancelled"]
    assert held_s(group) < 1.0  # the site's alarm is not held
    assert [r["status"] for r in deliveries(db, fire)] == ["pending"]


def escalating_fire(db: str, site: str) -> str:
    """A call point's confirmed fire under a rule telling `duty` at once and
    escalating to `chief` after 60 s; its alarm id."""
    add_rule(
        db, "fires", types=["fire"], targets=["duty"], escalate_after_s=60, escalate_to=["chief"]
    )
    call_point(db, f"{site}-M1", site)
    (alarm,) = write_alarms(db, transition(f"{site}-M1", site))
    return alarm


def test_escalation_is_scheduled_and_stopped_by_acknowledgement(hooks: str, site: str) -> None:
    db = hooks
    alarm = escalating_fire(db, site)
    assert query(
        db,
        "SELECT rule_id, level, next_at > now() FROM notify_escalations WHERE alarm_id = %s",
        (alarm,),
    ) == [("fires", 1, True)]
    # An escalation written but not yet sent when the acknowledgement comes is not sent.
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("UPDATE notify_escalations SET next_at = now() - interval '1 s'")

        async def escalate() -> int:
            async with await psycopg.AsyncConnection.connect(
                db, autocommit=True, row_factory=dict_row
            ) as aconn:
                return await notify_q.escalate_due(aconn, limit=10)

        assert asyncio.run(escalate()) == 1
    person(db, alarm, "ack")
    assert query(db, "SELECT count(*) FROM notify_escalations") == [(0,)]
    rows = {(r["event"], r["target_id"]): r["status"] for r in deliveries(db, alarm)}
    assert rows == {
        ("confirmed", "duty"): "pending",
        ("escalated", "chief"): "cancelled",
        ("acknowledged", "duty"): "pending",
    }


def test_no_rules_no_rows_and_deleted_rules_stop_escalation(hooks: str, site: str) -> None:
    db = hooks
    call_point(db, f"{site}-M1", site)
    write_alarms(db, transition(f"{site}-M1", site))
    assert deliveries(db) == []
    add_rule(db, "r", types=["fire"], targets=["duty"], escalate_after_s=5, escalate_to=["chief"])
    call_point(db, f"{site}-M2", site)
    write_alarms(db, transition(f"{site}-M2", site))
    assert query(db, "SELECT count(*) FROM notify_escalations") == [(1,)]
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("DELETE FROM notify_rules WHERE id = 'r'")
    assert query(db, "SELECT count(*) FROM notify_escalations") == [(0,)]


def test_an_unsent_escalation_is_superseded_by_the_next(hooks: str, site: str) -> None:
    db = hooks
    alarm = escalating_fire(db, site)

    async def escalate_now() -> int:
        async with await psycopg.AsyncConnection.connect(
            db, autocommit=True, row_factory=dict_row
        ) as conn:
            await conn.execute("UPDATE notify_escalations SET next_at = now() - interval '1 s'")
            return await notify_q.escalate_due(conn, limit=10)

    assert asyncio.run(escalate_now()) == 1
    assert asyncio.run(escalate_now()) == 1
    rows = [
        (r["escalation"], r["status"], r["last_error"])
        for r in deliveries(db, alarm)
        if r["event"] == "escalated"
    ]
    assert rows == [(1, "cancelled", "superseded by escalation 2"), (2, "pending", None)]


def test_a_site_level_offline_alarm_is_notified_once(hooks: str, site: str) -> None:
    """Ingest's grouping alarm for a silent site has no device (migration 0043)."""
    db = hooks
    add_rule(db, "offline", types=["offline"], targets=["duty"])
    call_point(db, f"{site}-M1", site)
    with psycopg.connect(db) as conn:
        conn.execute(
            "INSERT INTO alarms (id, device_id, site_id, building, floor, zone, type, verdict, "
            "reason, opened_at, confirmed_at) VALUES ('SITE1', NULL, %s, '', '', '', "
            "'offline', 'confirmed', 'site_silent', now(), now())",
            (site,),
        )
        conn.execute(
            "INSERT INTO alarm_log (alarm_id, action, actor) VALUES ('SITE1', 'opened', 'system')"
        )
    (row,) = deliveries(db, "SITE1")
    assert (row["event"], row["target_id"]) == ("confirmed", "duty")
    assert row["alarm"]["device"] is None
    assert row["alarm"]["reason"] == "site_silent"


# --- a notifier's side, by hand: what it claims, in which order, and who hears what ---

CLAIM_KEY = 0x46530F00D  # held by the test's own session while it plays a notifier


def claim(db: str, in_flight: dict[str, int] | None = None) -> list[notify_q.Claimed]:
    async def go() -> list[notify_q.Claimed]:
        async with await psycopg.AsyncConnection.connect(
            db, autocommit=True, row_factory=dict_row
        ) as conn:
            return await notify_q.claim(
                conn,
                notifier="hand",
                claim_key=CLAIM_KEY,
                lease_s=60.0,
                per_target=4,
                limit=100,
                in_flight=in_flight or {},
            )

    return asyncio.run(go())


def settle(db: str, c: notify_q.Claimed, *, delivered: bool, retry_in_s: float = 0.0) -> str:
    """The attempt's outcome; one that failed is due again after `retry_in_s`."""

    async def go() -> str:
        async with await psycopg.AsyncConnection.connect(
            db, autocommit=True, row_factory=dict_row
        ) as conn:
            return await notify_q.record_outcome(
                conn,
                delivery_id=c.id,
                notifier="hand",
                attempt=c.attempts,
                kind="webhook",
                at=datetime.now(UTC),
                duration_ms=1.0,
                delivered=delivered,
                status=200 if delivered else None,
                error=None if delivered else "could not connect",
                retry_at=None if delivered else datetime.now(UTC) + timedelta(seconds=retry_in_s),
            )

    return asyncio.run(go())


def escalate_now(db: str) -> int:
    async def go() -> int:
        async with await psycopg.AsyncConnection.connect(
            db, autocommit=True, row_factory=dict_row
        ) as conn:
            await conn.execute("UPDATE notify_escalations SET next_at = now() - interval '1 s'")
            return await notify_q.escalate_due(conn, limit=10)

    return asyncio.run(go())


def drain(db: str) -> list[tuple[str, str]]:
    """Claim and deliver until nothing is due: (event, target) in the order sent."""
    sent: list[tuple[str, str]] = []
    while batch := claim(db):
        for c in batch:
            sent.append((c.event, c.target_id))
            settle(db, c, delivered=True)
    return sent


@pytest.mark.parametrize("got_through", [False, True])
def test_only_targets_told_of_an_alarm_hear_it_acknowledged_and_cleared(
    hooks: str, site: str, got_through: bool
) -> None:
    """An outside check: the escalation target's receiver down, its escalation
    being attempted when the alarm was acknowledged, then cleared: it got
    `acknowledged` and `cleared` of an alarm it never heard of. Told means a
    notification of the alarm was delivered to it; the attempt under way at
    the acknowledgement counts if it gets through (at least once)."""
    db = hooks
    alarm = escalating_fire(db, site)
    with psycopg.connect(db, autocommit=True) as notifier:
        notifier.execute("SELECT pg_advisory_lock(%s)", (CLAIM_KEY,))
        assert escalate_now(db) == 1
        under_way = {c.target_id: c for c in claim(db)}
        assert {c.event for c in under_way.values()} == {"confirmed", "escalated"}
        assert settle(db, under_way["duty"], delivered=True) == "delivered"
        person(db, alarm, "ack")  # while chief's escalation is being attempted
        settle(db, under_way["chief"], delivered=got_through)
        person(db, alarm, "clear")
        sent = drain(db)
    rows = [
        (r["target_id"], r["event"], r["status"], r["last_error"]) for r in deliveries(db, alarm)
    ]
    chief = [r[1:] for r in rows if r[0] == "chief"]
    assert [s for s in sent if s[1] == "duty"] == [("acknowledged", "duty"), ("cleared", "duty")]
    if got_through:
        assert [s for s in sent if s[1] == "chief"] == [
            ("acknowledged", "chief"),
            ("cleared", "chief"),
        ]
        assert [status for _, status, _ in chief] == ["delivered"] * 3
    else:
        assert [s for s in sent if s[1] == "chief"] == []
        assert chief == [
            ("escalated", "cancelled", "alarm acknowledged before delivery"),
            ("acknowledged", "cancelled", notify_q.NOT_TOLD),
            ("cleared", "cancelled", notify_q.NOT_TOLD),
        ]


def test_escalations_keep_their_order_and_one_under_way_is_superseded(
    hooks: str, site: str
) -> None:
    """An outside check: escalation 7 delivered before escalation 6, and
    escalations being attempted escaped supersession. The next escalation
    cancels the one under way (whose attempt still ends, delivered or not
    retried) and waits for that attempt to end; a dead notifier's attempt is
    not waited for."""
    db = hooks
    alarm = escalating_fire(db, site)

    def escalations() -> list[tuple[int, str, str | None]]:
        return [
            (r["escalation"], r["status"], r["last_error"])
            for r in deliveries(db, alarm)
            if r["event"] == "escalated"
        ]

    with psycopg.connect(db, autocommit=True) as notifier:
        notifier.execute("SELECT pg_advisory_lock(%s)", (CLAIM_KEY,))
        assert escalate_now(db) == 1
        under_way = {c.target_id: c for c in claim(db)}
        settle(db, under_way["duty"], delivered=True)
        first = under_way["chief"]
        assert escalate_now(db) == 1
        assert escalations() == [
            (1, "cancelled", "superseded by escalation 2"),
            (2, "pending", None),
        ]
        assert claim(db) == []  # escalation 2 does not overtake escalation 1 under way
        assert settle(db, first, delivered=True) == "delivered"  # it got through
        (second,) = claim(db)
        assert (second.event, second.escalation) == ("escalated", 2)
        assert escalate_now(db) == 1
        assert claim(db) == []
        notifier.execute("SELECT pg_advisory_unlock(%s)", (CLAIM_KEY,))  # the notifier died
        (third,) = claim(db)
        assert (third.event, third.escalation) == ("escalated", 3)
    assert settle(db, second, delivered=False) == "cancelled"  # ends, is not retried
    assert escalations() == [
        (1, "delivered", None),
        (2, "cancelled", "superseded by escalation 3"),
        (3, "pending", None),
    ]


def still_to_send(db: str, c: notify_q.Claimed) -> bool:
    async def go() -> bool:
        async with await psycopg.AsyncConnection.connect(
            db, autocommit=True, row_factory=dict_row
        ) as conn:
            return await notify_q.still_to_send(
                conn, delivery_id=c.id, notifier="hand", claim_key=CLAIM_KEY, lease_s=60.0
            )

    return asyncio.run(go())


def test_a_claim_cancelled_before_its_request_is_not_sent_and_is_released(
    hooks: str, site: str
) -> None:
    """Checked right before the request: a claimed escalation the acknowledgement
    cancelled meanwhile is not sent, and its claim is released at once, so the
    `acknowledged` behind it does not wait for a lease to run out; a claim
    still wanted is, and keeps its lease."""
    db = hooks
    alarm = escalating_fire(db, site)
    with psycopg.connect(db, autocommit=True) as notifier:
        notifier.execute("SELECT pg_advisory_lock(%s)", (CLAIM_KEY,))
        assert escalate_now(db) == 1
        under_way = {c.target_id: c for c in claim(db)}
        assert still_to_send(db, under_way["duty"])
        assert settle(db, under_way["duty"], delivered=True) == "delivered"
        person(db, alarm, "ack")  # chief's escalation claimed, its request not yet made
        assert not still_to_send(db, under_way["chief"])
        (chief,) = [
            r for r in deliveries(db, alarm) if r["target_id"] == "chief" and r["escalation"]
        ]
        assert (chief["status"], chief["claimed_by"]) == ("cancelled", None)
        assert drain(db) == [("acknowledged", "duty")]  # chief was never told


def test_a_held_offline_is_not_released_by_another_delivery_to_its_target(
    hooks: str, site: str
) -> None:
    """A delivery that gets through releases what waits for its target at a
    retry's backoff, never what is held on purpose: an outside check saw every
    held `offline` sent within 65 ms of an unrelated fire's delivery, 10 s into
    a 65 s hold, and then its `cleared` when the device came back."""
    db = hooks
    add_rule(db, "all", types=["offline", "fire"], targets=["duty"])
    flap, burning = f"{site}-M1", f"{site}-M2"
    for d in (flap, burning):
        call_point(db, d, site)
    (held,) = write_alarms(db, transition(flap, site, type="offline", reason="silent"))
    write_alarms(db, transition(burning, site))
    assert drain(db) == [("confirmed", "duty")]  # the fire; the offline still held
    ((waits,),) = query(
        db,
        "SELECT extract(epoch FROM next_attempt_at - now()) FROM notifications WHERE alarm_id = %s",
        (held,),
    )
    assert waits > 50.0


def test_a_target_with_deliveries_under_way_gets_only_its_remaining_room(
    hooks: str, site: str
) -> None:
    """At most `per_target` (4) in flight per target in a notifier: one with 3
    under way gets 1 more (an outside check saw 6 hung attempts on one target,
    since only a target already at 4 was skipped)."""
    db = hooks
    add_rule(db, "fires", types=["fire"], targets=["duty", "chief"])
    for i in range(6):
        call_point(db, f"{site}-M{i}", site)
        write_alarms(db, transition(f"{site}-M{i}", site))
    got = claim(db, in_flight={"duty": 3, "chief": 4})
    assert [c.target_id for c in got] == ["duty"]
    more = [c.target_id for c in claim(db, in_flight={"chief": 1})]
    assert (more.count("duty"), more.count("chief")) == (4, 3)


def test_a_detector_registered_without_interval_is_held_for_its_kinds_interval(
    hooks: str, site: str
) -> None:
    """The hold is the device's interval (+5 s), the kind's default when it has
    none: a smoke detector's 10 s, not 60 s (an outside check was told of
    offline smoke detectors 65 s after they went offline)."""
    db = hooks
    add_rule(db, "offline", types=["offline"], targets=["duty"])
    dev = f"{site}-SD1"
    register(
        db,
        [{"id": dev, "site": site, "building": "B1", "floor": "2", "zone": "Z1", "kind": "smoke"}],
    )
    (alarm,) = write_alarms(db, transition(dev, site, type="offline", reason="silent"))
    ((held,),) = query(
        db,
        "SELECT extract(epoch FROM next_attempt_at - created_at) FROM notifications "
        "WHERE alarm_id = %s",
        (alarm,),
    )
    assert 14.0 <= float(held) <= 16.0


def test_the_databases_default_intervals_are_the_contracts(db: str) -> None:
    from firesafe.contract import DEFAULT_INTERVAL_S

    for kind, interval_s in DEFAULT_INTERVAL_S.items():
        ((got,),) = query(db, "SELECT firesafe_default_interval_s(%s)", (kind,))
        assert got == interval_s, kind


def test_an_attempt_that_fails_after_its_target_answered_again_is_retried_at_once(
    hooks: str, site: str
) -> None:
    """A receiver back while an attempt to it still hung: the deliveries after
    it got through, and the hung one, failing later, waited its whole backoff
    (an outside check: 42 s more). It is due at once when its target has taken
    a delivery since it began; with none, it waits its backoff."""
    db = hooks
    add_rule(db, "fires", types=["fire"], targets=["duty"])
    for i in range(3):
        call_point(db, f"{site}-M{i}", site)
        write_alarms(db, transition(f"{site}-M{i}", site))
    hung, answered, alone = claim(db)

    def fail_with_backoff(c: notify_q.Claimed) -> float:
        settle(db, c, delivered=False, retry_in_s=60)
        ((waits,),) = query(
            db,
            "SELECT extract(epoch FROM next_attempt_at - now()) FROM notifications WHERE id = %s",
            (c.id,),
        )
        return float(waits)

    assert fail_with_backoff(alone) > 50.0  # nothing got through since it began
    settle(db, answered, delivered=True)
    assert fail_with_backoff(hung) < 1.0
