"""The contract conformance check for device makers (`firesafe conformance`).

Listen to a device's (or a whole site's) traffic for a while, then judge it
rule by rule: topic shape, payload schema, finite numbers, clock sanity,
seq continuity, reporting interval, retained status / last will and gateway
batches. The checker is pure (feed it observations); `listen` is the MQTT part.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import statistics
import threading
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.subscribeoptions import SubscribeOptions

from device_sim import contract as c
from device_sim.payload_schemas import errors as schema_errors
from firesafe import i18n
from firesafe.i18n import N_
from firesafe.json_keys import pairs, repeated
from firesafe.settings import MqttEndpoint

log = logging.getLogger(__name__)

RULES = (
    "topic_shape",
    "payload_schema",
    "finite_numbers",
    "ts_sanity",
    "seq",
    "interval",
    "status_retained",
    "last_will",
    "gateway_batch",
    "qos",
)
# What the contract asks to arrive at QoS 1 (telemetry may use 0).
QOS1_TOPICS = frozenset({"event", "status", "batch"})
# A device clock kept by NTP is well within a few seconds of the broker's.
MAX_SKEW_S = 10.0
# ts below this is seconds, not milliseconds (1e12 ms is September 2001).
MIN_EPOCH_MS = 10**12
# Reporting period may wobble by this share (scheduling, jitter) on median.
INTERVAL_TOLERANCE = 0.25
EXAMPLES = 5


@dataclass
class RuleResult:
    rule: str
    status: str  # pass, fail, skip
    checked: int = 0
    failed: int = 0
    examples: list[str] = field(default_factory=list)
    note: str = ""

    def line(self, lang: str = i18n.DEFAULT_LANG) -> str:
        def t(msgid: str, **params: object) -> str:
            return i18n.translate(msgid, lang, **params)

        status = i18n.label("conformance_status", self.status, lang)
        # Wide (CJK) characters take two columns: pad to 4 columns either way.
        pad = " " * max(0, 4 - sum(2 if ord(ch) > 0x2E80 else 1 for ch in status))
        head = f"{status}{pad}  {self.rule:<16} {self.checked:>7} " + t(N_("checked"))
        if self.failed:
            head += t(N_(", {count} failed"), count=self.failed)
        if lang != i18n.DEFAULT_LANG:
            head += f"  [{i18n.label('conformance_rule', self.rule, lang)}]"
        if self.note:
            head += f"  ({self.note})"
        return "\n".join([head, *(f"        - {e}" for e in self.examples)])


@dataclass
class _Rule:
    """Counts and the first failures of one rule, kept as (msgid, values) until reported."""

    checked: int = 0
    failed: int = 0
    examples: list[tuple[str, dict[str, object]]] = field(default_factory=list)
    note: str = ""
    note_params: dict[str, object] = field(default_factory=dict)

    def ok(self) -> None:
        self.checked += 1

    def fail(self, why: str, /, **params: object) -> None:
        self.checked += 1
        self.failed += 1
        # The same problem on every message is one example, not five copies of it
        # (compared as text: an exception value is a new object every time).
        text = (why, {k: str(v) for k, v in params.items()})
        if len(self.examples) < EXAMPLES and text not in (
            (w, {k: str(v) for k, v in p.items()}) for w, p in self.examples
        ):
            self.examples.append((why, params))


@dataclass
class _Record:
    ts: int
    seq: int
    arrival: int
    order: int
    telemetry: bool
    kind_hint: str | None


def _parse_constant(name: str) -> float:
    return float(name)  # NaN/Infinity are not JSON; parse to judge them as non-finite


def _non_finite(value: Any, path: str = "") -> list[str]:
    if isinstance(value, float) and not math.isfinite(value):
        return [f"{path or '<root>'} = {value}"]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _non_finite(v, f"{path}/{k}")]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _non_finite(v, f"{path}/{i}")]
    return []


def _misnamed(v: dict[str, Any]) -> str | None:
    """Reading names detection would not know: one that is a contract name in
    another case (stored, never judged), or readings none of which the platform
    detects on (the device looks alive and healthy while nothing is judged)."""
    known = {name.lower(): name for name in c.READINGS}
    cased = [f"{n} ({known[n.lower()]}?)" for n in v if n not in c.READINGS and n.lower() in known]
    if cased:
        return ", ".join(cased)
    if v and not any(n in c.READINGS for n in v):
        return ", ".join(list(v)[:5])
    return None


def _names_known(rule: _Rule, topic: str, reading: dict[str, Any]) -> bool:
    """False (and `rule` failed, saying which) when `_misnamed` finds names in `v`."""
    misnamed = _misnamed(reading["v"])
    if misnamed:
        rule.fail(
            N_(
                "{topic}: reading names detection does not know: {names} (names are "
                "case-sensitive; the contract's are {known})"
            ),
            topic=topic,
            names=misnamed,
            known=", ".join(c.READINGS),
        )
    return misnamed is None


def _kind_from_readings(v: dict[str, Any]) -> str | None:
    names = set(v)
    for kind, readings in c.KIND_READINGS.items():
        if readings and names == set(readings):
            return kind
    return "mcp" if not names else None


class Checker:
    """Accumulates observed messages and judges them against the contract."""

    def __init__(
        self,
        site: str,
        device: str | None = None,
        *,
        interval_s: float | None = None,
        max_skew_s: float = MAX_SKEW_S,
    ) -> None:
        self.site = site
        self.device = device
        self.interval_s = interval_s
        self.max_skew_ms = max_skew_s * 1000
        self.rules = {r: _Rule() for r in RULES}
        self._judged = False
        self.records: dict[str, list[_Record]] = defaultdict(list)
        self.status_seen: dict[str, list[tuple[bytes, bool]]] = defaultdict(list)
        self.direct_devices: set[str] = set()
        self.observed = 0
        self._order = 0
        self.first_arrival: int | None = None
        self.last_arrival: int | None = None

    # --- feeding -----------------------------------------------------------

    def feed(self, topic: str, payload: bytes, retain: bool, arrival_ms: int, qos: int = 1) -> None:
        """One message as the broker delivered it (`qos`: its QoS, subscribed at 1)."""
        parts = topic.split("/")
        prefix = f"{c.TOPIC_ROOT}/{self.site}/"
        if not topic.startswith(prefix) and topic.lower().startswith(prefix.lower()):
            # Listened to only for this: the site's topics written in another case.
            self.observed += 1
            self.rules["topic_shape"].fail(
                N_("{topic}: topics are case-sensitive; the contract's is {expected}"),
                topic=topic,
                expected=f"{c.TOPIC_ROOT}/{self.site}/...",
            )
            return
        is_batch = len(parts) == 6 and parts[3] == "gateway"
        if self.device is not None and self.device not in parts and not is_batch:
            return  # someone else's traffic
        self.observed += 1
        self.first_arrival = self.first_arrival if self.first_arrival is not None else arrival_ms
        self.last_arrival = arrival_ms
        shape = self._shape(parts)
        if shape is None:
            self.rules["topic_shape"].fail(N_("{topic}: not a contract topic"), topic=topic)
            return
        self.rules["topic_shape"].ok()
        what, who = shape
        if what in QOS1_TOPICS:
            if qos < 1:
                self.rules["qos"].fail(
                    N_("{topic}: published at QoS 0; the contract asks QoS 1 for {what}"),
                    topic=topic,
                    what=what,
                )
            else:
                self.rules["qos"].ok()
        if what == "status":
            self._status(who, payload, retain)
            return
        if what == "cmd":
            return  # platform -> device traffic: not the device's to judge
        if len(payload) > c.MAX_PAYLOAD_BYTES:
            self.rules["payload_schema"].fail(
                N_("{topic}: {size} bytes > 64 KiB"), topic=topic, size=len(payload)
            )
            return
        try:
            body = json.loads(
                payload.decode("utf-8"), parse_constant=_parse_constant, object_pairs_hook=pairs
            )
        except (UnicodeDecodeError, ValueError) as exc:
            self.rules["payload_schema"].fail(
                N_("{topic}: not UTF-8 JSON ({error})"), topic=topic, error=exc
            )
            return
        key = repeated(body)
        if key is not None:  # ingest rejects it (JSON would keep one of the two)
            self.rules["payload_schema"].fail(
                N_("{topic}: key {key} given twice in one object"), topic=topic, key=repr(key)
            )
            return
        bad = _non_finite(body)
        if bad:
            self.rules["finite_numbers"].fail(
                N_("{topic}: {values}"), topic=topic, values=", ".join(bad[:3])
            )
        else:
            self.rules["finite_numbers"].ok()
        if what == "batch":
            self._batch(who, topic, body, retain, arrival_ms)
            return
        self.direct_devices.add(who)
        problems = schema_errors(what, body)
        if problems:
            self.rules["payload_schema"].fail(
                N_("{topic}: {problems}"), topic=topic, problems="; ".join(problems[:3])
            )
            return
        if what == "telemetry" and not _names_known(self.rules["payload_schema"], topic, body):
            return
        self.rules["payload_schema"].ok()
        if retain:
            self.rules["payload_schema"].fail(
                N_("{topic}: {what} must not be retained"), topic=topic, what=what
            )
        self._clock(topic, body["ts"], arrival_ms)
        hint = _kind_from_readings(body["v"]) if what == "telemetry" else None
        self._record(who, body["ts"], body["seq"], arrival_ms, what == "telemetry", hint)

    def _shape(self, parts: list[str]) -> tuple[str, str] | None:
        if len(parts) < 5 or "/".join(parts[:2]) != c.TOPIC_ROOT or parts[2] != self.site:
            return None
        if not c.ID_RE.match(parts[2]):
            return None
        if len(parts) == 5 and parts[4] in ("telemetry", "event", "status", "cmd"):
            if parts[3] == "gateway" or not c.ID_RE.match(parts[3]):
                return None
            return parts[4], parts[3]
        if (
            len(parts) == 6
            and parts[3] == "gateway"
            and parts[5] == "batch"
            and (c.ID_RE.match(parts[4]))
        ):
            return "batch", parts[4]
        return None

    def _status(self, who: str, payload: bytes, retain: bool) -> None:
        self.status_seen[who].append((payload, retain))
        rule = self.rules["status_retained"]
        if payload == b"offline":
            will = self.rules["last_will"]
            if retain:
                will.ok()
            else:
                will.fail(N_("{who}: `offline` (last will) arrived not retained"), who=who)
            return
        if payload != b"online":
            rule.fail(
                N_("{who}: status payload {payload}, not `online`/`offline`"),
                who=who,
                payload=repr(payload[:40]),
            )
        elif not retain:
            rule.fail(
                N_("{who}: status {payload} published without the retain flag"),
                who=who,
                payload=payload.decode(),
            )
        else:
            rule.ok()

    def _batch(self, gw: str, topic: str, body: Any, retain: bool, arrival_ms: int) -> None:
        rule = self.rules["gateway_batch"]
        problems = schema_errors("batch", body)
        if problems:
            rule.fail(N_("{topic}: {problems}"), topic=topic, problems="; ".join(problems[:3]))
            return
        if retain:
            rule.fail(N_("{topic}: batch must not be retained"), topic=topic)
            return
        self._clock(topic, body["ts"], arrival_ms)
        seen: set[tuple[str, int]] = set()
        ok = True
        for r in body["readings"]:
            if self.device is not None and r["device"] != self.device:
                continue
            if r["ts"] > body["ts"] + self.max_skew_ms:
                rule.fail(
                    N_(
                        "{topic}: reading of {device} at ts {ts} is after the batch's send time {sent}"  # noqa: E501
                    ),
                    topic=topic,
                    device=r["device"],
                    ts=r["ts"],
                    sent=body["ts"],
                )
                ok = False
            if (r["device"], r["seq"]) in seen:
                rule.fail(
                    N_("{topic}: {device} seq {seq} twice in one batch"),
                    topic=topic,
                    device=r["device"],
                    seq=r["seq"],
                )
                ok = False
            seen.add((r["device"], r["seq"]))
            ok = _names_known(rule, topic, r) and ok
            hint = _kind_from_readings(r["v"])
            self._record(r["device"], r["ts"], r["seq"], arrival_ms, True, hint)
        if ok:
            rule.ok()

    def _clock(self, topic: str, ts: int, arrival_ms: int) -> None:
        rule = self.rules["ts_sanity"]
        if ts < MIN_EPOCH_MS:
            rule.fail(
                N_("{topic}: ts {ts} looks like seconds, not epoch milliseconds"),
                topic=topic,
                ts=ts,
            )
        elif abs(ts - arrival_ms) > self.max_skew_ms:
            rule.fail(
                N_("{topic}: ts is {offset} s off the arrival time"),
                topic=topic,
                offset=f"{(ts - arrival_ms) / 1000:+.1f}",
            )
        else:
            rule.ok()

    def _record(
        self, who: str, ts: int, seq: int, arrival: int, telemetry: bool, hint: str | None
    ) -> None:
        self._order += 1
        self.records[who].append(_Record(ts, seq, arrival, self._order, telemetry, hint))

    # --- judging -------------------------------------------------------------

    def report(self, lang: str = i18n.DEFAULT_LANG) -> list[RuleResult]:
        """Every rule's result, its texts in `lang` (judging twice gives the same)."""
        if not self._judged:
            self._judge_seq()
            self._judge_interval()
            self._judge_status()
            self._judged = True
        out = []
        for name in RULES:
            r = self.rules[name]
            status = "fail" if r.failed else ("pass" if r.checked else "skip")
            examples = [i18n.translate(why, lang, **params) for why, params in r.examples]
            note = i18n.translate(r.note, lang, **r.note_params) if r.note else ""
            out.append(RuleResult(name, status, r.checked, r.failed, examples, note))
        return out

    def _judge_seq(self) -> None:
        rule = self.rules["seq"]
        for who, recs in sorted(self.records.items()):
            recs = sorted(recs, key=lambda r: (r.ts, r.order))
            for prev, cur in itertools.pairwise(recs):
                step = (cur.seq - prev.seq) % c.SEQ_MODULUS
                if step == 1:
                    rule.ok()
                elif step == 0:
                    rule.fail(
                        N_("{who}: seq {seq} repeated (ts {first} and {second})"),
                        who=who,
                        seq=cur.seq,
                        first=prev.ts,
                        second=cur.ts,
                    )
                elif step > c.SEQ_MODULUS // 2:
                    rule.fail(
                        N_("{who}: seq went back from {before} to {after}"),
                        who=who,
                        before=prev.seq,
                        after=cur.seq,
                    )
                else:
                    rule.fail(
                        N_("{who}: {count} seq missing between {before} and {after}"),
                        who=who,
                        count=step - 1,
                        before=prev.seq,
                        after=cur.seq,
                    )

    def _judge_interval(self) -> None:
        rule = self.rules["interval"]
        for who, recs in sorted(self.records.items()):
            tele = sorted({r.ts for r in recs if r.telemetry})
            hint = next((r.kind_hint for r in recs if r.kind_hint), None)
            expected = self.interval_s or (c.DEFAULT_INTERVAL_S.get(hint) if hint else None)
            if expected is None or len(tele) < 3 or tele[0] < MIN_EPOCH_MS:
                continue  # (a clock in seconds is ts_sanity's finding, not a period)
            gaps = [(b - a) / 1000 for a, b in itertools.pairwise(tele)]
            median = statistics.median(gaps)
            worst = max(gaps)
            if abs(median - expected) > INTERVAL_TOLERANCE * expected:
                rule.fail(
                    N_("{who}: reports every {median} s, expected {expected} s"),
                    who=who,
                    median=f"{median:.2f}",
                    expected=f"{expected:g}",
                )
            elif worst >= c.OFFLINE_AFTER_INTERVALS * expected:
                rule.fail(
                    N_("{who}: silent for {worst} s (offline after {times} x {expected} s)"),
                    who=who,
                    worst=f"{worst:.1f}",
                    times=c.OFFLINE_AFTER_INTERVALS,
                    expected=f"{expected:g}",
                )
            else:
                rule.ok()
        if not rule.checked and self.interval_s:
            rule.note = N_("needs 3+ valid readings per device; listen longer")
        elif not rule.checked:
            rule.note = N_("needs 3+ readings per device; listen longer or pass --interval")
        silent = sorted(set(self.status_seen) - set(self.records))
        if silent and not self.records:
            # A call point may send nothing but its status; a detector must not.
            rule.note = N_("only a status seen from {who}, no readings: is the topic right?")
            rule.note_params = {"who": ", ".join(silent[:EXAMPLES])}

    def _judge_status(self) -> None:
        rule = self.rules["status_retained"]
        for who in sorted(self.direct_devices):
            if who not in self.status_seen:
                rule.fail(N_("{who}: no retained status (`online` on connect) seen"), who=who)
        will = self.rules["last_will"]
        if not will.checked:
            will.note = N_("no `offline` observed; disconnect the device while listening to test")


def case_variants(site: str) -> list[str]:
    """The site's subscription, then the same in the other cases a device's
    firmware gets wrong (MQTT topics are case-sensitive: those reach nobody)."""
    exact = f"{c.TOPIC_ROOT}/{site}/#"
    roots = {c.TOPIC_ROOT, c.TOPIC_ROOT.upper(), c.TOPIC_ROOT.capitalize()}
    sites = {site, site.lower(), site.upper()}
    others = sorted({f"{r}/{s}/#" for r in roots for s in sites} - {exact})
    return [exact, *others]


def listen(
    endpoint: MqttEndpoint,
    checker: Checker,
    duration_s: float,
    *,
    ready: threading.Event | None = None,
) -> None:
    """Subscribe to the site's topics for `duration_s`, feeding the checker."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    endpoint.sign_in(client)
    lock = threading.Lock()
    subscribed = threading.Event()

    def on_message(_c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        now = int(time.time() * 1000)
        with lock:
            checker.feed(msg.topic, bytes(msg.payload), bool(msg.retain), now, int(msg.qos))

    def on_connect(cl: mqtt.Client, _u: object, _f: object, rc: Any, _p: object) -> None:
        # QoS 1: a message published at QoS 0 arrives at 0 (the qos rule).
        # retainAsPublished: see whether live status messages carry the retain flag.
        opts = SubscribeOptions(qos=1, retainAsPublished=True)
        cl.subscribe([(topic, opts) for topic in case_variants(checker.site)])

    client.on_message = on_message
    client.on_connect = on_connect
    client.on_subscribe = lambda *_a: subscribed.set()
    client.connect(endpoint.host, endpoint.port, 30)
    client.loop_start()
    try:
        if not subscribed.wait(10):
            raise RuntimeError(f"could not subscribe at {endpoint.url()}")
        if ready is not None:
            ready.set()
        time.sleep(duration_s)
    finally:
        client.disconnect()
        client.loop_stop()


def render(results: Iterable[RuleResult], observed: int, lang: str = i18n.DEFAULT_LANG) -> str:
    """The report as text, in `lang` (the results' own texts are already in it)."""
    results = list(results)
    failed = [r for r in results if r.status == "fail"]
    lines = [r.line(lang) for r in results]
    fail = i18n.label("conformance_status", "fail", lang)
    if observed == 0:
        return i18n.translate(
            N_(
                "no traffic seen: nothing to judge (check the site id, the broker URL and "
                "that the device publishes under fs/v1/<site>/<device>/...)"
            ),
            lang,
        )
    verdict = fail if failed else i18n.label("conformance_status", "pass", lang)
    lines.append(
        i18n.translate(
            N_("{verdict}: {failed} of {rules} rules failed, {messages} messages"),
            lang,
            verdict=verdict,
            failed=len(failed),
            rules=len(results),
            messages=observed,
        )
    )
    return "\n".join(lines)
