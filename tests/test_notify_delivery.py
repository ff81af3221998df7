"""The notifier against a real HTTP receiver and a real SMTP server (aiosmtpd):
signatures, retries, e-mail in both languages, escalation and its end, a
failing target beside a healthy one, a notifier killed mid-delivery, and a
call point activated over MQTT reaching a webhook."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import os
import signal
import subprocess
import sys
import threading
import time
from email.message import EmailMessage
from email.utils import parsedate_to_datetime
from urllib.parse import parse_qs

import orjson
import psycopg
import pytest
from psycopg.rows import dict_row

from api import render as api_render
from api.errors import request_lang
from firesafe.settings import Settings
from storage.queries import alarms as alarm_q
from storage.queries import notifications as notifications_q
from storage.queries.common import Scope
from tests.helpers import Publisher, register, running_ingest, wait_for
from tests.test_notify_support import (
    FAST,
    add_rule,
    add_target,
    call_point,
    deliveries,
    http_receiver,
    person,
    running_notifier,
    smtp_server,
    transition,
    write_alarms,
)

pytestmark = pytest.mark.integration

SECRET = "s3cret-key-of-the-duty-room"


def api_view(dsn: str, alarm_id: str, lang: str) -> dict[str, object]:
    """GET /api/v1/alarms/{id} as a client asking in `lang` sees it."""

    async def go() -> dict[str, object]:
        async with await psycopg.AsyncConnection.connect(
            dsn, autocommit=True, row_factory=dict_row
        ) as conn:
            row = await alarm_q.get_alarm(conn, scope=Scope.everything(), alarm_id=alarm_id)
        token = request_lang.set(lang)
        try:
            return api_render.alarm(row)
        finally:
            request_lang.reset(token)

    return asyncio.run(go())


def verify(body: bytes, header: str, secret: str) -> bool:
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, header)


def test_webhook_is_signed_and_carries_the_alarm(db: str, site: str) -> None:
    with http_receiver() as rx:
        add_target(db, "duty", url=rx.url + "/duty", secret=SECRET, language="zh")
        add_target(db, "plain", url=rx.url + "/plain")
        add_rule(db, "fires", types=["fire"], targets=["duty", "plain"])
        call_point(db, f"{site}-M1", site)
        with psycopg.connect(db, autocommit=True) as conn:
            conn.execute("UPDATE sites SET timezone = 'Asia/Shanghai' WHERE id = %s", (site,))
        with running_notifier(db):
            (alarm,) = write_alarms(db, transition(f"{site}-M1", site))
            wait_for(lambda: len(rx.got()) == 2)
        (req,) = rx.got("/duty")
        (unsigned,) = rx.got("/plain")
    assert verify(req.body, req.headers["X-Firesafe-Signature"], SECRET)
    assert not verify(req.body + b" ", req.headers["X-Firesafe-Signature"], SECRET)
    assert "X-Firesafe-Signature" not in unsigned.headers
    doc = orjson.loads(req.body)
    assert req.headers["X-Firesafe-Delivery"] == doc["delivery"]
    assert req.headers["Content-Type"].startswith("application/json")
    assert doc["event"] == "confirmed"
    assert doc["language"] == "zh"
    assert doc["text"].startswith(f"火警 {site} Z1")
    assert orjson.loads(unsigned.body)["text"].startswith(f"FIRE {site} Z1")
    assert "+0800" in doc["text"]  # the site's wall-clock time
    # The alarm exactly as GET /api/v1/alarms shows it (nothing changed since).
    assert doc["alarm"] == api_view(db, alarm, "zh-CN")
    assert doc["alarm"]["type_label"] == "火警"
    assert orjson.loads(unsigned.body)["alarm"] == api_view(db, alarm, "en")
    (row,) = [r for r in deliveries(db, alarm) if r["target_id"] == "duty"]
    assert str(row["id"]) == doc["delivery"]
    assert row["status"] == "delivered"
    assert row["attempts"] == 1
    assert row["last_status"] == 200


def test_failed_deliveries_are_retried_with_the_same_id(db: str, site: str) -> None:
    with http_receiver() as rx:
        rx.respond = lambda path, n: 503 if n < 2 else 204
        add_target(db, "duty", url=rx.url + "/duty", secret=SECRET)
        add_rule(db, "fires", types=["fire"], targets=["duty"])
        call_point(db, f"{site}-M1", site)
        with running_notifier(db):
            (alarm,) = write_alarms(db, transition(f"{site}-M1", site))
            wait_for(lambda: [r for r in deliveries(db, alarm) if r["status"] == "delivered"])
        got = rx.got("/duty")
    assert len(got) == 3
    assert len({r.headers["X-Firesafe-Delivery"] for r in got}) == 1
    assert len({r.body for r in got}) == 1  # same body, same signature
    assert all(verify(r.body, r.headers["X-Firesafe-Signature"], SECRET) for r in got)
    assert got[0].at < got[1].at < got[2].at
    (row,) = deliveries(db, alarm)
    assert (row["attempts"], row["last_status"], row["status"]) == (3, 204, "delivered")
    with psycopg.connect(db) as conn:
        attempts = conn.execute(
            "SELECT attempt, status FROM notification_attempts WHERE notification_id = %s "
            "ORDER BY attempt",
            (row["id"],),
        ).fetchall()
        counts: dict[str, int] = dict(
            conn.execute("SELECT outcome, count FROM notify_counts WHERE kind = 'webhook'")
        )
    assert attempts == [(1, 503), (2, 503), (3, 204)]
    assert counts == {"attempt_failed": 2, "delivered": 1}


def test_a_managers_target_that_now_resolves_privately_is_refused(db: str, site: str) -> None:
    # Saved when its name was public (the API checks then); the notifier checks
    # again before every attempt, so a name that moved to a private address
    # (DNS rebinding) reaches nothing. An admin's target at the same place does.
    with http_receiver() as rx:
        add_target(db, "mgr", url=rx.url + "/mgr", owner_sites=[site])
        add_target(db, "hq", url=rx.url + "/hq")
        add_rule(db, "fires", types=["fire"], targets=["mgr", "hq"])
        call_point(db, f"{site}-M1", site)
        with running_notifier(db):
            (alarm,) = write_alarms(db, transition(f"{site}-M1", site))
            wait_for(lambda: [r for r in deliveries(db, alarm) if r["status"] == "delivered"])
            refused = wait_for(  # (its attempt ended: counted at the claim, recorded after)
                lambda: [
                    r
                    for r in deliveries(db, alarm)
                    if r["target_id"] == "mgr" and r["attempts"] and r["last_error"]
                ]
            )
        assert rx.got("/mgr") == []
        assert len(rx.got("/hq")) == 1
    assert refused[0]["status"] != "delivered"
    assert "non-public address" in (refused[0]["last_error"] or "")


def test_email_in_the_targets_language(db: str, site: str) -> None:
    with smtp_server() as box:
        add_target(db, "mail-en", kind="email", address="duty@example.com")
        add_target(db, "mail-zh", kind="email", address="zhiban@example.cn", language="zh")
        add_rule(db, "fires", types=["fire"], targets=["mail-en", "mail-zh"])
        call_point(db, f"{site}-M1", site, zone="Z7")
        with running_notifier(db, smtp=box.endpoint):
            (alarm,) = write_alarms(db, transition(f"{site}-M1", site, zone="Z7"))
            wait_for(lambda: len(box.got()) == 2)
            person(db, alarm, "ack")
            wait_for(lambda: len(box.got()) == 4)
        en = box.got("duty@example.com")
        zh = box.got("zhiban@example.cn")

    def parts(msg: EmailMessage) -> dict[str, str]:
        return {
            part.get_content_type(): part.get_content()
            for part in msg.walk()
            if not part.is_multipart()
        }

    assert en[0]["Subject"].startswith(f"FIRE {site} Z7")
    assert "confirmed" in en[0]["Subject"]
    assert zh[0]["Subject"].startswith(f"火警 {site} Z7")
    assert "已确认" in zh[0]["Subject"]
    assert en[0]["From"] == "firesafe@test.invalid"
    for msg, word in ((en[0], "zone Z7"), (zh[0], "防火分区 Z7")):
        body = parts(msg)
        assert set(body) == {"text/plain", "text/html"}
        assert word in body["text/plain"]
        assert word in body["text/html"]
        assert alarm in body["text/plain"]
    assert "acknowledged by duty-officer" in en[1]["Subject"]
    assert "已由 duty-officer 响应" in zh[1]["Subject"]
    assert en[0]["X-Firesafe-Delivery"] != en[1]["X-Firesafe-Delivery"]
    # RFC 5322's Date (when sent) and a Message-ID at the From address's domain.
    for msg, tag in ((en[0], "en"), (zh[0], "zh-CN")):
        assert msg["Message-ID"] == f"<{msg['X-Firesafe-Delivery']}@test.invalid>"
        assert abs(parsedate_to_datetime(msg["Date"]).timestamp() - time.time()) < 60
        assert msg["Content-Language"] == tag


def test_escalation_repeats_until_acknowledged(db: str, site: str) -> None:
    with http_receiver() as rx:
        add_target(db, "duty", url=rx.url + "/duty")
        add_target(db, "chief", url=rx.url + "/chief")
        add_rule(
            db,
            "fires",
            types=["fire"],
            targets=["duty"],
            escalate_after_s=1,
            escalate_to=["chief"],
        )
        call_point(db, f"{site}-M1", site)
        call_point(db, f"{site}-M2", site)

        def events(path: str, alarm: str) -> list[tuple[str, int]]:
            docs = [orjson.loads(r.body) for r in rx.got(path)]
            return [(d["event"], d["escalation"]) for d in docs if d["alarm"]["id"] == alarm]

        with running_notifier(db):
            (first,) = write_alarms(db, transition(f"{site}-M1", site))
            wait_for(lambda: len(events("/chief", first)) >= 2, timeout=20)
            person(db, first, "ack")
            wait_for(lambda: ("acknowledged", 0) in events("/chief", first))
            wait_for(lambda: ("acknowledged", 0) in events("/duty", first))
            escalations_at_ack = [e for e in events("/chief", first) if e[0] == "escalated"]
            # A second alarm escalating twice takes at least two intervals: long enough
            # for the first to have escalated again had the acknowledgement not stopped it.
            (second,) = write_alarms(db, transition(f"{site}-M2", site))
            wait_for(lambda: len(events("/chief", second)) >= 2, timeout=20)
            person(db, second, "clear")
            wait_for(lambda: ("cleared", 0) in events("/chief", second))
        first_chief = events("/chief", first)
    assert events("/duty", first) == [("confirmed", 0), ("acknowledged", 0)]
    assert [e for e in first_chief if e[0] == "escalated"] == escalations_at_ack
    assert escalations_at_ack[:2] == [("escalated", 1), ("escalated", 2)]
    assert first_chief[-1] == ("acknowledged", 0)
    # The escalation's document shows the alarm still unacknowledged.
    doc = next(orjson.loads(r.body) for r in rx.got("/chief"))
    assert doc["alarm"]["status"] == "active"
    with psycopg.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM notify_escalations").fetchone() == (0,)


def test_a_failing_target_does_not_slow_the_others(db: str, site: str) -> None:
    release = threading.Event()
    lock = threading.Lock()
    hanging = [0, 0]  # now, most at once

    def respond(path: str, n: int) -> int:
        if path != "/dead":
            return 200
        with lock:
            hanging[0] += 1
            hanging[1] = max(hanging)
        release.wait(30)
        with lock:
            hanging[0] -= 1
        return 503

    # A timeout longer than the test: the dead target's requests stay in flight.
    patient = dataclasses.replace(FAST, http_timeout_s=60.0, lease_s=120.0)
    with http_receiver() as rx:
        rx.respond = respond
        add_target(db, "dead", url=rx.url + "/dead")
        add_target(db, "alive", url=rx.url + "/alive")
        add_rule(db, "fires", types=["fire"], targets=["dead", "alive"])
        devices = [f"{site}-M{i}" for i in range(12)]
        for d in devices:
            call_point(db, d, site)
        try:
            with running_notifier(db, tunables=patient):
                write_alarms(db, *[transition(d, site) for d in devices])
                # Every alarm reaches the live target while the dead one hangs.
                wait_for(lambda: len(rx.got("/alive")) == len(devices))
                wait_for(lambda: hanging[1] > 0)
                release.set()
        finally:
            release.set()
    # The dead target held at most its per-target share of the notifier.
    assert 1 <= hanging[1] <= FAST.per_target


def test_a_killed_notifier_delivers_again_with_the_same_id(db: str, site: str) -> None:
    with http_receiver() as rx:
        rx.hold = threading.Event()  # the first request hangs: the notifier dies mid-delivery
        add_target(db, "duty", url=rx.url + "/duty", secret=SECRET)
        add_rule(db, "fires", types=["fire"], targets=["duty"])
        call_point(db, f"{site}-M1", site)
        env = dict(os.environ, FIRESAFE_DATABASE_URL=db, FIRESAFE_LOG_LEVEL="WARNING")
        proc = subprocess.Popen(
            [sys.executable, "-m", "firesafe.cli", "notify"], env=env, stdin=subprocess.DEVNULL
        )
        try:
            (alarm,) = write_alarms(db, transition(f"{site}-M1", site))
            wait_for(lambda: len(rx.got("/duty")) == 1, timeout=30)
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        (row,) = deliveries(db, alarm)
        assert row["status"] == "pending"
        assert row["lease_until"] is not None  # still claimed by the dead notifier
        rx.hold.set()
        # A new notifier takes it over at once (the dead one's lock is gone), not after
        # the lease: its own lease here is far longer than the test's patience.
        with running_notifier(db):
            wait_for(lambda: deliveries(db, alarm)[0]["status"] == "delivered", timeout=15)
        got = rx.got("/duty")
    assert len(got) == 2
    assert got[0].headers["X-Firesafe-Delivery"] == got[1].headers["X-Firesafe-Delivery"]
    assert got[0].body == got[1].body
    assert deliveries(db, alarm)[0]["attempts"] == 2


def test_templated_body_for_an_sms_gateway(db: str, site: str) -> None:
    with http_receiver() as rx:
        add_target(
            db,
            "sms",
            url=rx.url + "/v2/sms/single_send.json",
            language="zh",
            template="apikey=KEY&mobile=13800000000&text=【消防】{text}&site={alarm.site}",
            content_type="application/x-www-form-urlencoded",
        )
        add_rule(db, "fires", types=["fire"], targets=["sms"])
        call_point(db, f"{site}-M1", site)
        with running_notifier(db):
            write_alarms(db, transition(f"{site}-M1", site))
            wait_for(lambda: rx.got())
        (req,) = rx.got()
    assert req.headers["Content-Type"].startswith("application/x-www-form-urlencoded")
    form = parse_qs(req.body.decode())
    assert form["site"] == [site]
    assert form["mobile"] == ["13800000000"]
    assert form["text"][0].startswith(f"【消防】火警 {site} Z1")


def test_call_point_over_mqtt_reaches_the_webhook(
    db: str, ingest_settings: Settings, publisher: Publisher, site: str
) -> None:
    with http_receiver() as rx:
        add_target(db, "duty", url=rx.url + "/duty", secret=SECRET)
        add_rule(db, "fires", sites=[site], types=["fire"], targets=["duty"])
        register(
            db,
            [
                {
                    "id": f"{site}-MCP",
                    "site": site,
                    "building": "B1",
                    "floor": "2",
                    "zone": "Z1",
                    "kind": "mcp",
                }
            ],
        )
        with running_ingest(ingest_settings), running_notifier(db):
            sent = time.monotonic()
            publisher.send(
                f"fs/v1/{site}/{site}-MCP/event",
                {"ts": int(time.time() * 1000), "seq": 1, "type": "activated"},
            )
            (req,) = wait_for(lambda: rx.got("/duty"), timeout=20)
    doc = orjson.loads(req.body)
    assert (doc["event"], doc["alarm"]["type"], doc["alarm"]["verdict"]) == (
        "confirmed",
        "fire",
        "confirmed",
    )
    assert doc["alarm"]["device"] == f"{site}-MCP"
    assert verify(req.body, req.headers["X-Firesafe-Signature"], SECRET)
    assert req.at > sent


def test_an_acknowledgement_never_overtakes_the_confirmation(db: str, site: str) -> None:
    with http_receiver() as rx:
        confirmations = threading.Event()

        def respond(path: str, n: int) -> int:
            if n < 3:
                confirmations.set()
                return 503  # the confirmation fails three times
            return 200

        rx.respond = respond
        add_target(db, "duty", url=rx.url + "/duty")
        add_rule(db, "fires", types=["fire"], targets=["duty"])
        call_point(db, f"{site}-M1", site)
        with running_notifier(db):
            (alarm,) = write_alarms(db, transition(f"{site}-M1", site))
            assert confirmations.wait(15)
            person(db, alarm, "ack")  # while the confirmation is being retried
            person(db, alarm, "clear")
            wait_for(lambda: all(r["status"] == "delivered" for r in deliveries(db, alarm)))
        got = [(orjson.loads(r.body)["event"], r.path) for r in rx.got()]
    assert [e for e, _ in got] == ["confirmed"] * 4 + ["acknowledged", "cleared"]


def test_the_notifier_survives_losing_its_database_sessions(db: str, site: str) -> None:
    with http_receiver() as rx:
        add_target(db, "duty", url=rx.url + "/duty")
        add_rule(db, "fires", types=["fire"], targets=["duty"])
        call_point(db, f"{site}-M1", site)
        call_point(db, f"{site}-M2", site)
        with running_notifier(db):
            write_alarms(db, transition(f"{site}-M1", site))
            wait_for(lambda: len(rx.got()) == 1)
            with psycopg.connect(db, autocommit=True) as conn:
                killed = conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name LIKE 'firesafe-notify%%' "
                    "AND datname = current_database()"
                ).fetchall()
            assert len(killed) >= 2  # the listener (and its lock) and the pool
            (alarm,) = write_alarms(db, transition(f"{site}-M2", site))
            wait_for(lambda: deliveries(db, alarm)[0]["status"] == "delivered", timeout=30)
    assert len(rx.got()) == 2


def test_notifiers_side_by_side_deliver_each_notification_once(db: str, site: str) -> None:
    with http_receiver() as rx:
        for t in ("a", "b", "c"):
            add_target(db, t, url=f"{rx.url}/{t}")
        add_rule(db, "fires", types=["fire"], targets=["a", "b", "c"])
        devices = [f"{site}-M{i}" for i in range(40)]
        for d in devices:
            call_point(db, d, site)
        with running_notifier(db), running_notifier(db), running_notifier(db):
            write_alarms(db, *[transition(d, site) for d in devices])
            wait_for(lambda: len(rx.got()) >= 3 * len(devices), timeout=30)
            wait_for(lambda: all(r["status"] == "delivered" for r in deliveries(db)))
        ids = {r.headers["X-Firesafe-Delivery"] for r in rx.got()}
    rows = deliveries(db)
    assert ids == {str(r["id"]) for r in rows}
    assert len(rows) == 3 * len(devices)
    # Sent again only after a failed attempt (the receiver dropped a connection under
    # load), never twice at once by two notifiers.
    with psycopg.connect(db) as conn:
        attempts = conn.execute(
            "SELECT notification_id, array_agg(error IS NULL AND status BETWEEN 200 AND 299 "
            "ORDER BY attempt) FROM notification_attempts GROUP BY 1"
        ).fetchall()
    assert len(attempts) == len(rows)
    assert all(ok[-1] and not any(ok[:-1]) for _, ok in attempts)


def test_a_slow_receiver_keeps_its_claim_and_a_frozen_notifier_loses_it(db: str, site: str) -> None:
    """An outside check: a notifier stopped with SIGSTOP (its database session
    still open, its advisory lock held) kept the fire notifications it had
    claimed for the 90 s lease although a second notifier was running. Now
    the lease is short and renewed while the attempt is under way: a receiver
    slower than the lease keeps its delivery with the notifier waiting for it
    (no second attempt by the peer), a frozen notifier's claim goes to the
    peer within the lease. (Production: 15 s, renewed every 5 s.)"""
    quick = dataclasses.replace(FAST, lease_s=1.0, heartbeat_s=0.25, max_poll_s=0.2)
    slow_s = 2.0

    def respond(path: str, n: int) -> int:
        if n == 0:
            time.sleep(slow_s)  # the first request to each path: slower than the lease
        return 200

    with http_receiver() as rx:
        rx.respond = respond
        add_target(db, "slow", url=rx.url + "/slow")
        add_target(db, "stuck", url=rx.url + "/stuck")
        add_rule(db, "fires", types=["fire"], targets=["slow"])
        add_rule(db, "faults", types=["fault"], targets=["stuck"])
        call_point(db, f"{site}-M1", site)
        with running_notifier(db, tunables=quick) as first:
            (fire,) = write_alarms(db, transition(f"{site}-M1", site))
            wait_for(lambda: rx.got("/slow"))  # the first notifier's attempt, under way
            with running_notifier(db, tunables=quick):
                wait_for(lambda: deliveries(db, fire)[0]["status"] == "delivered", timeout=10)
            assert len(rx.got("/slow")) == 1  # the peer never took it over
            assert deliveries(db, fire)[0]["attempts"] == 1

            (fault,) = write_alarms(
                db, transition(f"{site}-M1", site, type="fault", reason="device")
            )
            wait_for(lambda: rx.got("/stuck"))  # claimed by the first notifier, which...
            first.freeze(quick.lease_s + 2.0)  # ...stops (beyond the assertion below)
            frozen_at = time.monotonic()
            with running_notifier(db, tunables=quick):
                wait_for(lambda: deliveries(db, fault)[0]["status"] == "delivered", timeout=10)
                taken_over_s = time.monotonic() - frozen_at
        got = rx.got("/stuck")
    # Within the lease (+ a poll and a start-up), long before the first notifier wakes.
    assert taken_over_s < quick.lease_s + 1.5
    assert len(got) == 2
    assert got[0].headers["X-Firesafe-Delivery"] == got[1].headers["X-Firesafe-Delivery"]
    (row,) = deliveries(db, fault)
    assert (row["status"], row["attempts"]) == ("delivered", 2)


def test_a_notifier_frozen_between_claim_and_request_sends_nothing_a_peer_delivered(
    db: str, site: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A notifier stopped right after its claim (before its request) for longer
    than the lease: the peer takes the delivery over and makes it; woken, the
    first one asks whether the claim is still its own before sending and sends
    nothing (before: a second request, one the peer had already made, or an
    escalation the acknowledgement had cancelled meanwhile)."""
    quick = dataclasses.replace(FAST, lease_s=1.0, heartbeat_s=0.25, max_poll_s=0.2)
    claim = notifications_q.claim
    frozen = threading.Event()

    async def claim_then_freeze(*args: object, **kwargs: object) -> list[notifications_q.Claimed]:
        claimed = await claim(*args, **kwargs)  # type: ignore[arg-type]
        if claimed and not frozen.is_set():
            frozen.set()
            time.sleep(quick.lease_s + 2.0)  # noqa: ASYNC251 (the process stops, heartbeat included)
        return claimed

    with http_receiver() as rx:
        add_target(db, "duty", url=rx.url + "/duty")
        add_rule(db, "fires", types=["fire"], targets=["duty"])
        call_point(db, f"{site}-M1", site)
        monkeypatch.setattr(notifications_q, "claim", claim_then_freeze)
        with running_notifier(db, tunables=quick):
            (fire,) = write_alarms(db, transition(f"{site}-M1", site))
            assert frozen.wait(10)
            with running_notifier(db, tunables=quick):
                wait_for(lambda: deliveries(db, fire)[0]["status"] == "delivered", timeout=10)
                time.sleep(quick.lease_s + 1.0)  # the first one wakes meanwhile
        got = rx.got("/duty")
    assert len(got) == 1
    (row,) = deliveries(db, fire)
    assert row["status"] == "delivered"  # claimed twice, attempted once:
    with psycopg.connect(db) as conn:
        (made,) = conn.execute(
            "SELECT count(*) FROM notification_attempts WHERE notification_id = %s", (row["id"],)
        ).fetchone() or (0,)
    assert made == 1


def test_a_notifier_stops_within_seconds_with_its_database_frozen(db: str) -> None:
    """An outside check: Ctrl-C of `up` with the database frozen (SIGSTOP)
    waited 10 s for the notifier, whose queries psycopg cancels politely
    (asking the frozen server, then waiting). `firesafe notify` gives a
    delivery under way NOTIFY_STOP_GRACE_S, then cuts its connections."""
    from firesafe.runtime import NOTIFY_STOP_GRACE_S, run_notify
    from tests.netproxy import database_proxy

    proxy, via_proxy = database_proxy(db)

    async def go() -> float:
        stop = asyncio.Event()
        running = asyncio.create_task(run_notify(Settings(database_url=via_proxy), stop))
        await asyncio.sleep(1.5)  # connected, polling
        proxy.hold()  # the server freezes
        await asyncio.sleep(3.0)  # a poll waits on it
        began = time.monotonic()
        stop.set()
        assert await asyncio.wait_for(running, 30) == 0
        return time.monotonic() - began

    try:
        took = asyncio.run(go())
    finally:
        proxy.close()
    assert took < NOTIFY_STOP_GRACE_S + 1.5, took  # (10 s and more before)
