"""Rendering (pure): texts in both languages, signatures, templates, the e-mail,
and the retry schedule."""

from __future__ import annotations

import hashlib
import hmac
import json
import random
from datetime import datetime
from email import message_from_bytes, policy
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import parse_qs
from zoneinfo import ZoneInfo

import httpx
import pytest

from notify import render
from notify.service import Tunables, retry_delay_s

ALARM: dict[str, Any] = {
    "id": "A1",
    "type": "fire",
    "verdict": "confirmed",
    "status": "active",
    "device": "S1-B1-F2-MCP",
    "site": "S1",
    "building": "B1",
    "floor": "2",
    "zone": "Z3",
    "reason": "call_point",
    "acknowledged_by": None,
    "cleared_by": None,
    "detail": {},
    "opened_at": "2026-12-03T10:00:00.000Z",
    "confirmed_at": "2026-12-03T10:00:00.000Z",
    "cleared_at": None,
    "acknowledged_at": None,
    "updated_at": "2026-12-03T10:00:00.000Z",
}


def notice(event: str = "confirmed", language: str = "en", **alarm: object) -> render.Notice:
    return render.Notice("d-1", event, 0, {**ALARM, **alarm}, language)


@pytest.mark.parametrize("language", ["en", "zh"])
@pytest.mark.parametrize("event", render.EVENTS)
@pytest.mark.parametrize("kind", list(render.TYPE_LABELS["en"]))
def test_every_event_and_type_has_a_text(language: str, event: str, kind: str) -> None:
    n = render.Notice("d", event, 2, {**ALARM, "type": kind, "acknowledged_by": "ann"}, language)
    subject = render.subject(n)
    assert subject.startswith(f"{render.TYPE_LABELS[language][kind]} S1 Z3")
    assert "{" not in render.text(n)
    assert "B1" in render.text(n)


def test_texts_in_each_language() -> None:
    assert render.subject(notice()) == "FIRE S1 Z3: confirmed"
    assert render.subject(notice(language="zh")) == "火警 S1 Z3：已确认"
    esc = render.Notice("d", "escalated", 3, ALARM, "zh")
    assert render.subject(esc) == "火警 S1 Z3：无人响应，第 3 次升级"
    ack = notice("acknowledged", acknowledged_by="ann")
    assert render.subject(ack) == "FIRE S1 Z3: acknowledged by ann"
    cleared = notice("cleared", language="zh", cleared_by="system")
    assert render.subject(cleared) == "火警 S1 Z3：已由系统清除"  # no spaces in Chinese
    by_person = notice("cleared", language="zh", cleared_by="op-li")
    assert render.subject(by_person) == "火警 S1 Z3：已由 op-li 清除"  # Latin set apart
    by_name = notice("acknowledged", language="zh", acknowledged_by="李工")
    assert render.subject(by_name) == "火警 S1 Z3：已由李工响应"
    assert "防火分区 Z3" in render.text(notice(language="zh"))
    # Reasons as a person reads them, the code only in the document.
    assert "原因：手动报警按钮" in render.text(notice(language="zh"))
    zh = render.text(notice(language="zh", reason="fast_growth"))
    assert "fast_growth" not in zh
    assert "原因：烟雾快速增长" in zh
    assert "reason: Fast smoke growth" in render.text(notice(reason="fast_growth"))
    assert render.document(notice(language="zh"))["alarm"]["reason"] == "call_point"
    assert render.subject(notice(language="fr")).startswith("FIRE")  # unknown: English


def test_json_body_is_stable_and_signed() -> None:
    body = render.json_body(notice())
    assert body == render.json_body(notice())
    doc = json.loads(body)
    assert doc["alarm"] == {
        **ALARM,
        "type_label": "Fire",
        "verdict_label": "Confirmed",
        "status_label": "Active",
        "reason_label": "Manual call point",
    }
    assert (doc["event"], doc["delivery"], doc["language"]) == ("confirmed", "d-1", "en")
    expected = hmac.new(b"k", body, hashlib.sha256).hexdigest()
    assert render.signature(body, "k") == f"sha256={expected}"


def test_templates_escape_for_their_content_type() -> None:
    n = notice(zone='Z"3&x=1')
    as_json = render.templated_body(
        n,
        '{"msgtype": "text", "text": {"content": "{text}"}, "z": "{alarm.zone}"}',
        "application/json",
    )
    doc = json.loads(as_json)  # still valid JSON with a quote in the zone
    assert doc["z"] == 'Z"3&x=1'
    assert doc["text"]["content"].startswith("FIRE S1 Z")
    as_form = render.templated_body(n, "to=1&z={alarm.zone}&e={event}", render.FORM_TYPE)
    assert parse_qs(as_form.decode()) == {"to": ["1"], "z": ['Z"3&x=1'], "e": ["confirmed"]}
    assert render.templated_body(n, "{alarm.site}/{escalation}", "text/plain") == b"S1/0"
    # The template's own text in a form: non-ASCII encoded, what was encoded kept.
    sms = render.templated_body(n, "a=%E2%9C%93&text=【消防监控】{event}", render.FORM_TYPE)
    assert sms.isascii()
    assert parse_qs(sms.decode()) == {"a": ["\u2713"], "text": ["【消防监控】confirmed"]}


@pytest.mark.parametrize("bad", ["{alarm.secret}", "{x}", "{alarm}", "{Text}"])
def test_unknown_placeholders_are_refused(bad: str) -> None:
    with pytest.raises(render.UnknownPlaceholder, match="unknown") as refused:
        render.check_template(f"a {bad} b")
    assert refused.value.placeholder == bad
    assert refused.value.alarm_field == (bad == "{alarm.secret}")


def test_literal_braces_are_left_alone() -> None:
    render.check_template('{"a": {"b": 1}, "c": "{text}"}')


SENT_AT = datetime(2026, 12, 3, 18, 0, 5, tzinfo=ZoneInfo("Asia/Shanghai"))


def test_email_has_plain_and_html() -> None:
    msg = render.email(notice(language="zh", zone="<Z>"), sender="f@x", to="t@y", date=SENT_AT)
    assert msg["Subject"].startswith("火警 S1 <Z>")
    types = [p.get_content_type() for p in msg.walk() if not p.is_multipart()]
    assert types == ["text/plain", "text/html"]
    html_part = msg.get_body(("html",))
    assert html_part is not None
    assert "&lt;Z&gt;" in html_part.get_content()


def test_email_has_the_headers_rfc_5322_asks_for_and_its_language() -> None:
    """Date (when sent, in UTC), a Message-ID at the sender's domain that is the
    same on every attempt of a delivery, and Content-Language, which
    set_content() used to drop; all survive the trip through bytes."""
    for language, tag in (("zh", "zh-CN"), ("en", "en")):
        sender = "Firesafe <alerts@Fire.Example.COM>"
        msg = render.email(notice(language=language), sender=sender, to="t@y", date=SENT_AT)
        again = render.email(notice(language=language), sender=sender, to="t@y", date=SENT_AT)
        parsed = message_from_bytes(msg.as_bytes(), policy=policy.default)
        assert b"\r\nDate: Thu, 03 Dec 2026 10:00:05 +0000\r\n" in msg.as_bytes(policy=policy.SMTP)
        assert parsedate_to_datetime(parsed["Date"]) == SENT_AT
        assert parsed["Message-ID"] == "<d-1@Fire.Example.COM>"
        assert again["Message-ID"] == msg["Message-ID"]
        assert parsed["Content-Language"] == tag
        assert len(parsed.get_all("Content-Language") or []) == 1
    # No domain in the From address, or one only IDNA can write: still a valid id.
    assert render.message_id_domain("firesafe") == "localhost"
    assert render.message_id_domain("消防 <jk@消防.中国>") == "xn--r1wm18f.xn--fiqs8s"
    assert render.message_id_domain("") == "localhost"


def test_retry_delays_grow_with_jitter_and_stay_capped() -> None:
    t = Tunables(backoff_base_s=1.0, backoff_cap_s=300.0)
    rng = random.Random(1)
    for attempts in range(1, 30):
        ceiling = min(300.0, 2.0 ** (attempts - 1))
        delays = {retry_delay_s(attempts, t, rng) for _ in range(50)}
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(delays) > 1  # jittered


def test_leases_are_short_and_outlive_missed_heartbeats() -> None:
    """A frozen notifier's claims return within 20 s; two missed renewals in a
    row lose nothing; a heartbeat must come before the lease runs out."""
    t = Tunables()
    assert t.lease_s <= 20.0
    assert t.lease_s > 2 * t.heartbeat_s
    with pytest.raises(ValueError, match="shorter than lease_s"):
        Tunables(lease_s=5.0, heartbeat_s=5.0)


def test_times_in_texts_are_the_sites_wall_clock() -> None:
    shanghai = render.Notice("d", "confirmed", 0, ALARM, "zh", timezone="Asia/Shanghai")
    assert "2026-12-03 18:00:00 +0800" in render.text(shanghai)
    assert "2026-12-03 10:00:00 +0000" in render.text(notice())
    unknown = render.Notice("d", "confirmed", 0, ALARM, "en", timezone="Nowhere/Land")
    assert ALARM["opened_at"] in render.text(unknown)
    # The document keeps the API's UTC timestamps.
    assert json.loads(render.json_body(shanghai))["alarm"]["opened_at"] == ALARM["opened_at"]


def test_a_site_level_alarm_has_no_device() -> None:
    site_alarm = {**ALARM, "type": "offline", "reason": "site_silent", "device": None}
    n = render.Notice("d", "confirmed", 0, site_alarm, "en")
    assert "device -" in render.text(n)
    assert "None" not in render.text(n)
    # A site's alarm has no zone either (a grouped storm of a whole site).
    storm = render.Notice("d", "confirmed", 0, {**site_alarm, "zone": None}, "zh")
    assert render.subject(storm) == "离线 S1：已确认"
    assert "None" not in render.text(storm)


def test_a_failed_delivery_is_described_in_words() -> None:
    from notify.service import describe_failure

    assert describe_failure(httpx.ReadTimeout("")) == "no answer in time (timed out)"
    refused = httpx.ConnectError("All connection attempts failed")
    assert describe_failure(refused) == "could not connect: All connection attempts failed"
    assert describe_failure(ValueError("bad template")) == "ValueError: bad template"
    assert describe_failure(RuntimeError()) == "RuntimeError"
