"""What a notification says: texts in the target's language, the webhook body,
the body templates of SMS/voice gateways, the e-mail, the signature.

Pure functions of the outbox row (no I/O, no clock): the same row renders
the same bytes on every attempt, so a retried webhook carries the same body
and the same signature. The one exception is an e-mail's `Date:`, the time
the message is sent, which the caller passes in.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import json
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from typing import Any
from urllib.parse import quote, quote_plus
from zoneinfo import ZoneInfoNotFoundError

import orjson

from firesafe.i18n import label, local_time

LANGUAGES = ("en", "zh")
EVENTS = ("opened", "confirmed", "escalated", "acknowledged", "cleared")

TYPE_LABELS: dict[str, dict[str, str]] = {
    "en": {
        "fire": "FIRE",
        "pre_alarm": "Pre-alarm",
        "electrical": "Electrical fire alarm",
        "fault": "Fault",
        "offline": "Offline",
        "evac_fault": "Evacuation device fault",
    },
    "zh": {
        "fire": "火警",
        "pre_alarm": "预警",
        "electrical": "电气火灾报警",
        "fault": "故障",
        "offline": "离线",
        "evac_fault": "应急疏散设备故障",
    },
}
EVENT_LABELS: dict[str, dict[str, str]] = {
    "en": {
        "opened": "raised, under verification",
        "confirmed": "confirmed",
        "escalated": "NOT ACKNOWLEDGED, escalation {n}",
        "acknowledged": "acknowledged by {who}",
        "cleared": "cleared by {who}",
    },
    "zh": {
        "opened": "已触发，核实中",
        "confirmed": "已确认",
        "escalated": "无人响应，第 {n} 次升级",
        "acknowledged": "已由{who}响应",
        "cleared": "已由{who}清除",
    },
}
PLACE = {
    "en": "site {site}, building {building}, floor {floor}, zone {zone}, device {device}",
    "zh": "站点 {site}，建筑 {building}，{floor} 层，防火分区 {zone}，设备 {device}",
}
DETAIL = {
    "en": "reason: {reason}; opened {opened_at}",
    "zh": "原因：{reason}；触发时间 {opened_at}",
}
SYSTEM = {"en": "the system", "zh": "系统"}

# Placeholders a body template may use: {event}, {text}, {subject}, {delivery},
# {language}, {escalation} and {alarm.<field>} for any field of the alarm document.
_PLACEHOLDER_RE = re.compile(
    r"\{(alarm\.[a-z_]+|event|text|subject|delivery|language|escalation)\}"
)
_ANY_PLACEHOLDER_RE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_.]*)\}")
ALARM_FIELDS = (
    "id",
    "type",
    "verdict",
    "status",
    "device",
    "site",
    "building",
    "floor",
    "zone",
    "reason",
    "acknowledged_by",
    "cleared_by",
    "opened_at",
    "confirmed_at",
    "cleared_at",
    "acknowledged_at",
    "updated_at",
    "type_label",
    "verdict_label",
    "status_label",
    "reason_label",
)
# The labels the API adds to an alarm (api/render.py), in the target's language.
LABELS = (
    ("type_label", "alarm_type", "type"),
    ("verdict_label", "verdict", "verdict"),
    ("status_label", "status", "status"),
    ("reason_label", "reason", "reason"),
)
CATALOGUE_LANG = {"en": "en", "zh": "zh-CN"}
JSON_TYPE = "application/json"
FORM_TYPE = "application/x-www-form-urlencoded"
_FORM_LITERAL_SAFE = "".join(chr(c) for c in range(0x20, 0x7F))  # printable ASCII


@dataclass(frozen=True, slots=True)
class Notice:
    """One notification to render: the outbox row's content."""

    delivery_id: str
    event: str
    escalation: int
    alarm: Mapping[str, Any]
    language: str
    timezone: str = "UTC"  # the site's IANA zone: times in texts are its wall-clock

    @property
    def lang(self) -> str:
        return self.language if self.language in LANGUAGES else "en"


def _local(iso: object, timezone: str) -> str:
    """An API timestamp as the site's wall-clock time with its offset (as is when
    it cannot be read)."""
    if not isinstance(iso, str):
        return str(iso)
    try:
        return local_time(datetime.fromisoformat(iso), timezone)
    except (ValueError, ZoneInfoNotFoundError):
        return iso


def alarm_view(notice: Notice) -> dict[str, Any]:
    """The alarm as the API shows it to a client of the target's language: the
    stored document (UTC times, codes) with the codes' labels."""
    view = dict(notice.alarm)
    for field, vocabulary, code in LABELS:
        value = view.get(code)
        if value is not None:
            view[field] = label(vocabulary, str(value), CATALOGUE_LANG[notice.lang])
    return view


def _who(notice: Notice, key: str) -> str:
    who = notice.alarm.get(key)
    return SYSTEM[notice.lang] if who in (None, "system") else str(who)


def _set_apart(name: str) -> str:
    """A name inside Chinese text: a space where it meets the Chinese with a Latin
    letter or digit ("已由 op-li 清除"), none where its own end is Chinese ("已由系统清除")."""

    def wide(c: str) -> bool:
        return unicodedata.east_asian_width(c) in "WF"

    return f"{'' if wide(name[0]) else ' '}{name}{'' if wide(name[-1]) else ' '}"


def subject(notice: Notice) -> str:
    """'<type> <site> <zone>: <event>' (a subject that starts with what, where)."""
    lang = notice.lang
    a = notice.alarm
    kind = TYPE_LABELS[lang].get(str(a.get("type")), str(a.get("type")))
    who = _who(notice, "acknowledged_by" if notice.event == "acknowledged" else "cleared_by")
    if lang == "zh" and who:
        who = _set_apart(who)
    event = EVENT_LABELS[lang][notice.event].format(n=notice.escalation, who=who)
    sep = "：" if lang == "zh" else ": "
    where = " ".join(str(a[k]) for k in ("site", "zone") if a.get(k))  # a site's alarm: no zone
    return f"{kind} {where}{sep}{event}"


def text(notice: Notice) -> str:
    """The human text: one line a pager or an SMS can carry."""
    lang = notice.lang
    a = notice.alarm
    place = PLACE[lang].format(
        # A site-level alarm (a grouped offline storm) has no device, building or zone.
        **{k: a.get(k) or "-" for k in ("site", "building", "floor", "zone")},
        device=a.get("device") or "-",
    )
    reason = a.get("reason")
    detail = DETAIL[lang].format(
        # What a person reads, in the target's language; the code stays in the document.
        reason="-" if reason is None else label("reason", str(reason), CATALOGUE_LANG[lang]),
        opened_at=_local(a.get("opened_at"), notice.timezone),
    )
    sep = "。" if lang == "zh" else ". "
    return f"{subject(notice)}{sep}{place}{sep}{detail}"


def document(notice: Notice) -> dict[str, Any]:
    """The webhook's JSON document."""
    return {
        "delivery": notice.delivery_id,
        "event": notice.event,
        "escalation": notice.escalation,
        "language": notice.lang,
        "subject": subject(notice),
        "text": text(notice),
        "alarm": alarm_view(notice),
    }


def json_body(notice: Notice) -> bytes:
    # Sorted keys: the same row gives the same bytes, hence the same signature.
    return orjson.dumps(document(notice), option=orjson.OPT_SORT_KEYS)


# The placeholders a template may use, as a person reads them.
PLACEHOLDERS = (
    "{event}",
    "{text}",
    "{subject}",
    "{delivery}",
    "{language}",
    "{escalation}",
    "{alarm.<field>}",
)


class UnknownPlaceholder(ValueError):
    """A placeholder a template may not use; `placeholder` is it with its braces,
    `alarm_field` whether it is an `{alarm.<field>}` of no such field."""

    def __init__(self, placeholder: str, *, alarm_field: bool) -> None:
        what = "alarm field" if alarm_field else "placeholder"
        super().__init__(f"unknown {what} {placeholder}")
        self.placeholder = placeholder
        self.alarm_field = alarm_field


def check_template(template: str) -> None:
    """UnknownPlaceholder naming the first placeholder a template may not use."""
    for match in _ANY_PLACEHOLDER_RE.finditer(template):
        name = match.group(1)
        if _PLACEHOLDER_RE.fullmatch(match.group(0)) is None:
            raise UnknownPlaceholder(match.group(0), alarm_field=False)
        if name.startswith("alarm.") and name[6:] not in ALARM_FIELDS:
            raise UnknownPlaceholder(match.group(0), alarm_field=True)


def templated_body(notice: Notice, template: str, content_type: str) -> bytes:
    """A gateway's own body: placeholders replaced, escaped for the content type
    (JSON string content for JSON, URL-encoded for forms, as is otherwise)."""
    values: dict[str, Any] = {
        "event": notice.event,
        "text": text(notice),
        "subject": subject(notice),
        "delivery": notice.delivery_id,
        "language": notice.lang,
        "escalation": notice.escalation,
    }
    media = content_type.split(";")[0].strip().lower()
    alarm = alarm_view(notice)

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        value = alarm.get(name[6:]) if name.startswith("alarm.") else values[name]
        raw = "" if value is None else str(value)
        if media == JSON_TYPE or media.endswith("+json"):
            return json.dumps(raw, ensure_ascii=False)[1:-1]
        if media == FORM_TYPE:
            return quote_plus(raw)
        return raw

    if media == FORM_TYPE:
        # The template's own text too: `text=【消防监控】{text}` (the docs' SMS
        # example) went out with raw UTF-8 in a form body. Only what is not
        # printable ASCII is encoded, so text written encoded stays as it is.
        out, pos = [], 0
        for match in _PLACEHOLDER_RE.finditer(template):
            out += [quote(template[pos : match.start()], safe=_FORM_LITERAL_SAFE), replace(match)]
            pos = match.end()
        out.append(quote(template[pos:], safe=_FORM_LITERAL_SAFE))
        return "".join(out).encode("ascii")
    return _PLACEHOLDER_RE.sub(replace, template).encode("utf-8")


def signature(body: bytes, secret: str) -> str:
    """X-Firesafe-Signature: sha256=<hex HMAC-SHA256 of the body>."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def message_id_domain(sender: str) -> str:
    """The right-hand side of our Message-IDs: the domain of the From address
    (`localhost` when it has none or it cannot be written in ASCII)."""
    _, at, domain = parseaddr(sender)[1].rpartition("@")
    domain = domain.strip().rstrip(".")
    if not at or not domain:
        return "localhost"
    try:
        return domain.encode("idna").decode("ascii")
    except UnicodeError:
        return "localhost"


def email(notice: Notice, *, sender: str, to: str, date: datetime) -> EmailMessage:
    """Plain text and HTML alternatives, in the target's language.

    `date` is when the message is sent (RFC 5322 requires `Date:`; it is the
    origination time, not the alarm's, which the text carries). The
    `Message-ID` is the delivery id at the sender's domain: the same on every
    attempt of one delivery, like `X-Firesafe-Delivery`, so a mail system or
    client that got a retried message twice can tell it is one message.
    """
    lang = notice.lang
    content_language = "zh-CN" if lang == "zh" else "en"
    msg = EmailMessage()
    msg["Subject"] = subject(notice)
    msg["From"] = sender
    msg["To"] = to
    # "+0000", not "GMT": RFC 5322 lists the zone names as obsolete syntax (4.3).
    msg["Date"] = format_datetime(date.astimezone(UTC))
    msg["Message-ID"] = f"<{notice.delivery_id}@{message_id_domain(sender)}>"
    msg["X-Firesafe-Delivery"] = notice.delivery_id
    a = alarm_view(notice)
    rows = [(field, a.get(field)) for field in ALARM_FIELDS if a.get(field) is not None]
    plain = text(notice) + "\n\n" + "\n".join(f"{k}: {v}" for k, v in rows) + "\n"
    msg.set_content(plain, charset="utf-8")
    cells = "".join(
        f"<tr><th align='left'>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>"
        for k, v in rows
    )
    page = (
        f"<!DOCTYPE html><html lang='{content_language}'><head>"
        f"<meta charset='utf-8'><title>{html.escape(subject(notice))}</title></head><body>"
        f"<h2>{html.escape(subject(notice))}</h2><p>{html.escape(text(notice))}</p>"
        f"<table>{cells}</table></body></html>"
    )
    msg.add_alternative(page, subtype="html", charset="utf-8")
    # Last: set_content() drops the Content-* headers set before it, and
    # add_alternative() moves those of the root into the first part.
    msg["Content-Language"] = content_language
    return msg
