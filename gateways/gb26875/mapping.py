"""Decoded GB/T 26875.3 frames -> contract MQTT messages. Pure, no I/O.

One status object reports the whole state of its component; the platform's
contract speaks in state changes (events). `Translator` turns a status into
the events that changed since the last *confirmed* state it knows of the
component (all of them when it knows nothing, e.g. after a restart: the
platform treats a repeated state as a no-op). The caller remembers the new
states only once the broker has acknowledged every message of the frame, so
a frame that was not confirmed translates the same way when it is resent.

Every message is deterministic in the frame's content: `ts` from the object's
time label (the site's local time), `seq` a CRC of the frame's serial number,
the object's bytes and the event type. A resent frame therefore yields the
same (device, ts, seq) keys and ingest stores it once.

Device ids (contract pattern `[A-Za-z0-9_-]{1,64}`):
component `{uitd}_{system type}_{system address}_{component address}`,
fire-safety system (panel) `{uitd}_{system type}_{system address}`.
"""

from __future__ import annotations

import base64
import functools
import re
import zlib
import zoneinfo
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from typing import Any, Final

import orjson

from firesafe.contract import DEFAULT_INTERVAL_S, GATEWAY_SITE, ID_RE, TOPIC_ROOT
from gateways.gb26875 import codec as c

# Status bits that make a point or panel "faulty" (one `fault` alarm per device;
# it clears when none of them is set any more).
COMP_FAULT_MASK: Final = 1 << 2 | 1 << 8  # fault, power fault
SYS_FAULT_MASK: Final = 1 << 2 | 1 << 8 | 1 << 9 | 1 << 10  # fault, main/backup power, bus
UITD_FAULT_MASK: Final = 0b1111100  # fault, main/backup power, channel, controller line
FIRE: Final = 1 << 1
# A transmission device's clock this close to the centre's is taken as it is
# (a backlog keeps its times); further off it is wrong (as detection's
# FUTURE_TOLERANCE_MS judges a device's clock).
CLOCK_TRUST_MS: Final = 10 * 60_000
# A transmission device's backlog (what it stored while its link was down) is
# at most this old; an object labelled further back than its frame is on a
# clock of its own (a panel's reset to 2000-01-01 behind a device whose clock
# is right) and takes its frame's time.
BACKLOG_MAX_MS: Final = 30 * 86_400_000
# A device's clock shift is kept while its clock stays this close to it.
SHIFT_KEPT_MS: Final = 5 * 60_000
SHIELDED: Final = 1 << 3
# Analog types: (reading name, scale to the contract's unit).
ANALOG: Final = {
    1: ("event_count", 1.0),
    2: ("height_m", 0.01),
    3: ("temperature", 0.1),
    4: ("pressure_mpa", 0.1),
    5: ("pressure_kpa", 0.1),
    6: ("gas_lel_pct", 0.1),
    7: ("time_s", 1.0),
    8: ("voltage", 0.1),
    9: ("current", 0.1),
    10: ("flow_l_s", 0.1),
    11: ("air_m3_min", 0.1),
    12: ("wind_m_s", 1.0),
}
RESIDUAL_CURRENT_DETECTOR: Final = 17
EVAC_SYSTEM: Final = 22


@dataclass(frozen=True, slots=True)
class Uitd:
    """A registered transmission device, as the registry knows it."""

    id: str
    site: str
    building: str
    floor: str
    zone: str
    utc_offset_min: int | None = None  # the uitd's own registry field, when set
    timezone: str | None = None  # its site's IANA zone (sites.timezone)
    ready_ms: int = 0  # epoch ms from which the platform listens to its site (see directory)

    @property
    def clock(self) -> int | tzinfo:
        """The zone of its time labels: its `utc_offset_min`, else its site's time
        zone when one was set (not the default UTC), else UTC+8 (the protocol's
        home, where a site's zone is usually left unset)."""
        if self.utc_offset_min is not None:
            return self.utc_offset_min
        if self.timezone and self.timezone != "UTC":
            zone = _zone(self.timezone)
            if zone is not None:
                return zone
        return c.DEFAULT_UTC_OFFSET_MIN


@dataclass(frozen=True, slots=True)
class Component:
    """A device to register on its first frame (POST /api/v1/devices)."""

    id: str
    site: str
    building: str
    floor: str
    zone: str
    kind: str
    name: str | None
    interval_s: float

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "site": self.site,
            "building": self.building,
            "floor": self.floor,
            "zone": self.zone,
            "kind": self.kind,
            "interval_s": self.interval_s,
        }
        if self.name:
            out["name"] = self.name[:200]
        return out


@dataclass(frozen=True, slots=True)
class Message:
    topic: str
    payload: bytes
    retain: bool = False


@dataclass(slots=True)
class Translation:
    messages: list[Message] = field(default_factory=list)
    components: dict[str, Component] = field(default_factory=dict)
    states: dict[str, int] = field(default_factory=dict)  # remember once confirmed


@functools.lru_cache(maxsize=256)
def _zone(name: str) -> tzinfo | None:
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return None


def component_kind(system_type: int, component_type: int) -> str:
    """The registry kind of a panel point (docs/gb26875.md)."""
    if system_type == EVAC_SYSTEM:
        return "evac"
    if component_type == 23:
        return "mcp"
    if 30 <= component_type <= 37:
        return "heat"
    if 40 <= component_type <= 44:
        return "smoke"
    if 50 <= component_type <= 53:
        return "multi"
    if 16 <= component_type <= 18:
        return "electrical"
    return "point"


def reject_topic(gateway: str) -> str:
    return f"{TOPIC_ROOT}/{GATEWAY_SITE}/{gateway}/reject"


# A reject's detail is kept to this many characters.
DETAIL_MAX: Final = 500
_WHERE_FROM: Final = re.compile(r" \((?:serial \d+, )?from [^()]*\)$")


def clipped(detail: str) -> str:
    """`detail` within DETAIL_MAX, cut after a whole entry (a recheck saw a cut
    name a different, valid-looking point on a fire's reject) and marked;
    where the frame came from is kept."""
    if len(detail) <= DETAIL_MAX:
        return detail
    m = _WHERE_FROM.search(detail)
    tail = m.group(0) if m else ""
    head = detail[: len(detail) - len(tail)]
    room = DETAIL_MAX - len(tail) - 2
    cut = max(head.rfind(", ", 0, room), head.rfind("; ", 0, room))
    return head[: cut if cut > 0 else room] + " …" + tail


def reject_message(
    gateway: str,
    *,
    raw: bytes,
    reason: str,
    detail: str,
    at_ms: int,
    source: str | None = None,
    device: str | None = None,
    peer: str | None = None,
    size: int | None = None,
) -> Message:
    """A frame (or bytes) the platform keeps as a reject; ingest stores the raw bytes.
    `size`: how many bytes the reject covers when `raw` is only their head."""
    body: dict[str, Any] = {
        "ts": at_ms,
        "reason": reason,
        "detail": clipped(detail),
        "raw": base64.b64encode(raw).decode(),
    }
    if size is not None and size != len(raw):
        body["size"] = size
    if source is not None:
        body["source"] = source
    if device is not None:
        body["device"] = device
    if peer is not None:
        body["peer"] = peer
    return Message(reject_topic(gateway), orjson.dumps(body))


def status_message(uitd: Uitd, online: bool) -> Message:
    return Message(
        f"{TOPIC_ROOT}/{uitd.site}/{uitd.id}/status",
        b"online" if online else b"offline",
        retain=True,
    )


def _seq(serial: int, raw_object: bytes, what: str) -> int:
    return zlib.crc32(raw_object + what.encode(), zlib.crc32(serial.to_bytes(2, "little")))


def _as_known(flags: int, sent: int, prev: int | None) -> int:
    """Status bits not sent (an object cut inside them) as last known (0 when
    never known): a missing byte is no change, neither a fault nor a restore."""
    return (flags & sent) | ((prev or 0) & ~sent & 0xFFFF)


def _flags_text(flags: int, names: tuple[str, ...]) -> str:
    """`flags=0x0003 (fire)`; bit 0 clear is the panel's test mode."""
    on = [n for n in c.set_bits(flags, names) if n != "normal"]
    if flags & 1 == 0:
        on.insert(0, "test")
    return f"flags=0x{flags:04x} ({', '.join(on) or 'normal'})"


def _clock_note(frame_ms: int, shift: int, tz: int | tzinfo) -> str:
    sent = datetime.fromtimestamp(frame_ms / 1000, c.clock(tz)).isoformat(timespec="seconds")
    days, minutes = divmod(abs(shift) // 60_000, 1440)
    off = f"{days} d {minutes // 60} h {minutes % 60} min {'behind' if shift > 0 else 'ahead'}"
    return f"uitd clock {sent}, {off}: times taken from the centre's clock"


def _label_note(label_ms: int, tz: int | tzinfo) -> str:
    at = datetime.fromtimestamp(label_ms / 1000, c.clock(tz)).isoformat(timespec="seconds")
    return f"time label {at} is not on its frame's clock: the frame's time taken"


def _event(
    out: Translation,
    site: str,
    serial: int,
    raw: bytes,
    ts: int,
    device: str,
    what: str,
    detail: str,
    *,
    note: str = "",
) -> None:
    payload: dict[str, Any] = {"ts": ts, "seq": _seq(serial, raw, what), "type": what}
    detail = f"{detail}; {note}" if detail and note else detail or note
    if detail:
        payload["detail"] = detail.replace("\x00", "")
    out.messages.append(Message(f"{TOPIC_ROOT}/{site}/{device}/event", orjson.dumps(payload)))


class Translator:
    """Frames of one gateway -> messages. Holds its name and the clock shift in
    use per transmission device; the known states are passed in (the caller
    owns them and updates them on confirm)."""

    def __init__(self, gateway: str) -> None:
        self.gateway = gateway
        self._shifts: dict[str, int] = {}  # uitd id -> ms added to its labels

    def _shift(self, uitd: str, frame_ms: int, arrival_ms: int) -> int:
        """What to add to a transmission device's labels: nothing while its clock
        (the frame's send time) is within CLOCK_TRUST_MS of the centre's; else
        the difference, in whole minutes rounded down (never in the future),
        kept while the device's clock stays that far off: a resend seconds
        later gives the same times and is stored once (an outside check)."""
        skew = arrival_ms - frame_ms
        if abs(skew) <= CLOCK_TRUST_MS:
            self._shifts.pop(uitd, None)
            return 0
        kept = self._shifts.get(uitd)
        if kept is not None and 0 <= skew - kept <= SHIFT_KEPT_MS:
            return kept
        self._shifts[uitd] = shift = skew // 60_000 * 60_000
        return shift

    def _time(
        self, label_ms: int | None, frame_ms: int | None, shift: int, arrival_ms: int
    ) -> tuple[int, bool]:
        """An object's time on the centre's clock, and whether its label was
        left aside. A label is on its frame's clock when at most BACKLOG_MAX_MS
        before it and not after it (a backlog keeps its times); one that is not
        but is on the centre's (the device's clock reset, the panel's right) is
        taken as it is; else (the panel's clock reset, not a date) the frame's
        time. A frame without a valid time: a label on the centre's clock, else
        the arrival time (a label of a reset clock would hide the event in 2000)."""
        if frame_ms is None:
            if label_ms is not None and (
                arrival_ms - BACKLOG_MAX_MS <= label_ms <= arrival_ms + CLOCK_TRUST_MS
            ):
                return label_ms, False
            return arrival_ms, True
        if label_ms is not None:
            if frame_ms - BACKLOG_MAX_MS <= label_ms <= frame_ms + CLOCK_TRUST_MS:
                return label_ms + shift, False
            if shift and arrival_ms - BACKLOG_MAX_MS <= label_ms <= arrival_ms + CLOCK_TRUST_MS:
                return label_ms, False
        return frame_ms + shift, True

    def translate(
        self,
        frame: c.Frame,
        adu: c.Adu,
        uitd: Uitd,
        known: Mapping[str, int],
        arrival_ms: int,
    ) -> Translation:
        out = Translation()
        off = uitd.clock
        frame_ms = c.label_ms(frame.time_label, off)
        shift = 0 if frame_ms is None else self._shift(uitd.id, frame_ms, arrival_ms)
        clock_note = "" if frame_ms is None or not shift else _clock_note(frame_ms, shift, off)
        sent_at = arrival_ms if frame_ms is None else frame_ms + shift  # the batch's own ts
        readings: dict[tuple[str, int], dict[str, Any]] = {}
        for obj, raw in zip(adu.objects, adu.raw_objects, strict=True):
            label_ms = c.label_ms(obj.label, off)
            ts, aside = self._time(label_ms, frame_ms, shift, arrival_ms)
            note = clock_note if ts != label_ms else ""
            if aside and label_ms is not None:
                note = "; ".join(n for n in (_label_note(label_ms, off), clock_note) if n)
            elif not obj.label:  # an object cut short, taken from its head
                taken = "the arrival time" if frame_ms is None else "the frame's time"
                cut = f"object cut short (no time label): {taken} taken"
                note = "; ".join(n for n in (cut, clock_note) if n)

            event = functools.partial(_event, out, uitd.site, frame.serial, raw, ts, note=note)

            if isinstance(obj, c.ComponentStatus):
                comp = self._component(
                    uitd,
                    obj.system_type,
                    obj.system_address,
                    obj.component_type,
                    obj.component_address,
                    obj.description,
                )
                out.components.setdefault(comp.id, comp)
                text = f"{as_text(obj.description)}; " if obj.description else ""
                flags = _as_known(obj.flags, obj.flags_known, known.get(comp.id))
                detail = text + _flags_text(flags, c.COMP_BITS)
                self._status(
                    event,
                    comp.id,
                    comp.kind,
                    known.get(comp.id),
                    flags,
                    COMP_FAULT_MASK,
                    detail,
                    out,
                )
            elif isinstance(obj, c.SystemStatus):
                panel = self._panel(uitd, obj.system_type, obj.system_address)
                out.components.setdefault(panel.id, panel)
                flags = _as_known(obj.flags, obj.flags_known, known.get(panel.id))
                detail = _flags_text(flags, c.SYS_BITS)
                self._status(
                    event,
                    panel.id,
                    "panel",
                    known.get(panel.id),
                    flags,
                    SYS_FAULT_MASK,
                    detail,
                    out,
                )
            elif isinstance(obj, c.UitdStatus):
                detail = _flags_text(obj.flags, c.UITD_BITS)
                self._status(
                    event,
                    uitd.id,
                    "uitd",
                    known.get(uitd.id),
                    obj.flags,
                    UITD_FAULT_MASK,
                    detail,
                    out,
                )
            elif isinstance(obj, c.SystemOperation):
                panel = self._panel(uitd, obj.system_type, obj.system_address)
                out.components.setdefault(panel.id, panel)
                ops = ", ".join(c.set_bits(obj.flags, c.OPERATION_BITS)) or "none"
                event(panel.id, "operation", f"{ops} by operator {obj.operator}")
            elif isinstance(obj, c.UitdOperation):
                ops = ", ".join(c.set_bits(obj.flags, c.OPERATION_BITS)) or "none"
                event(uitd.id, "operation", f"{ops} by operator {obj.operator}")
            elif isinstance(obj, c.UitdClock):
                clock = c.label_ms(obj.label, off)
                shown = (
                    datetime.fromtimestamp(clock / 1000, UTC).isoformat()
                    if clock is not None
                    else f"not a date: {obj.label.hex()}"
                )
                event(uitd.id, "clock", f"device clock {shown}")
            elif isinstance(obj, c.Analog):
                comp = self._component(
                    uitd,
                    obj.system_type,
                    obj.system_address,
                    obj.component_type,
                    obj.component_address,
                    "",
                )
                out.components.setdefault(comp.id, comp)
                name, scale = ANALOG.get(obj.analog_type, (f"analog_{obj.analog_type}", 1.0))
                value = obj.value * scale
                if name == "temperature" and comp.kind == "electrical":
                    name = "cable_temperature"
                elif name == "current" and obj.component_type == RESIDUAL_CURRENT_DETECTOR:
                    name, value = "residual_current", obj.value * 100.0  # 0.1 A -> mA
                reading = readings.get((comp.id, ts))
                if reading is None:
                    reading = readings[(comp.id, ts)] = {
                        "device": comp.id,
                        "ts": ts,
                        "seq": _seq(frame.serial, raw, "reading"),
                        "v": {},
                    }
                reading["v"][name] = round(value, 6)
        if readings:
            body = {"ts": sent_at, "readings": list(readings.values())}
            out.messages.append(
                Message(f"{TOPIC_ROOT}/{uitd.site}/gateway/{uitd.id}/batch", orjson.dumps(body))
            )
        return out

    @staticmethod
    def _status(
        event: Any,
        device: str,
        kind: str,
        prev: int | None,
        flags: int,
        fault_mask: int,
        detail: str,
        out: Translation,
    ) -> None:
        """Events for the bits that changed since `prev` (all of them if unknown)."""
        fire, was_fire = bool(flags & FIRE), prev is not None and bool(prev & FIRE)
        # Bit 0 clear: the panel reports the point in test mode (a walk test).
        test, was_test = not flags & 1, prev is not None and not prev & 1
        if fire and test and not was_fire:
            event(device, "panel_test", detail)
        elif fire and (prev is None or not was_fire or (was_test and not test)):
            # (also a test alarm still raised once test mode ends: a real one now)
            event(device, "activated" if kind == "mcp" else "panel_fire", detail)
        elif not fire and (prev is None or was_fire):
            real_mcp = kind == "mcp" and not (was_fire and was_test)
            event(device, "reset" if real_mcp else "panel_reset", detail)
        faults = flags & fault_mask
        if faults and (prev is None or prev & fault_mask != faults):
            event(device, "fault", detail)
        elif not faults and (prev is None or prev & fault_mask):
            event(device, "restore", detail)
        shielded = bool(flags & SHIELDED)
        if kind != "uitd" and shielded and (prev is None or not prev & SHIELDED):
            event(device, "shielded", detail)
        elif kind != "uitd" and not shielded and prev is not None and prev & SHIELDED:
            event(device, "unshielded", detail)
        out.states[device] = flags

    @staticmethod
    def _component(uitd: Uitd, st: int, sa: int, ct: int, ca: int, description: str) -> Component:
        cid = f"{uitd.id}_{st}_{sa}_{ca}"
        kind = component_kind(st, ct)
        # Until an admin assigns a zone, a point is its own zone: two points are
        # never taken to corroborate each other on a guess about where they are.
        return Component(
            id=cid,
            site=uitd.site,
            building=uitd.building,
            floor=uitd.floor,
            zone=cid,
            kind=kind,
            name=description or None,
            interval_s=DEFAULT_INTERVAL_S["point"],
        )

    @staticmethod
    def _panel(uitd: Uitd, st: int, sa: int) -> Component:
        pid = f"{uitd.id}_{st}_{sa}"
        return Component(
            id=pid,
            site=uitd.site,
            building=uitd.building,
            floor=uitd.floor,
            zone=pid,
            kind="panel",
            name=f"system type {st} address {sa}",
            interval_s=DEFAULT_INTERVAL_S["panel"],
        )


# Points named in a reject's alarm summary, per kind of alarm (the detail is
# kept to 500 characters).
SUMMARY_NAMES: Final = 6


# A panel's point description inside a detail: the characters that separate
# and bracket a detail's parts, in English or in its Chinese label, become a
# middle dot, so a description can neither split a detail into clauses nor
# forge an entry ("), FAULTS: point 1/1/1 (" read as a second list; a recheck
# forged "；故障：" in the Chinese label with full-width forms).
_AS_TEXT: Final = str.maketrans(dict.fromkeys(";,():；，（）：、[]［］", "·"))


def as_text(description: str) -> str:
    return description.translate(_AS_TEXT)


def alarm_summary(objects: Sequence[c.InfoObject]) -> str:
    """`it carries FIRE ALARMS: point 1/1/261 (3F), system 1/1; FAULTS: ...` for
    the alarm states the objects report, '' when none: a reject of a frame that
    carries an alarm must say so loudly (an operator reads rejects; one that
    reads like a heartbeat's hides a fire)."""
    fires: list[str] = []
    manual: list[str] = []
    faults: list[str] = []
    for o in objects:
        if isinstance(o, c.ComponentStatus):
            text = f" ({as_text(o.description)})" if o.description else ""
            name = f"point {o.system_type}/{o.system_address}/{o.component_address}{text}"
            fault = COMP_FAULT_MASK
        elif isinstance(o, c.SystemStatus):
            name, fault = f"system {o.system_type}/{o.system_address}", SYS_FAULT_MASK
        elif isinstance(o, c.UitdStatus):
            name, fault = "the transmission device", UITD_FAULT_MASK
        elif isinstance(o, c.SystemOperation | c.UitdOperation):
            if c.bit(o.flags, "manual_alarm", c.OPERATION_BITS):
                where = (
                    f"system {o.system_type}/{o.system_address}"
                    if isinstance(o, c.SystemOperation)
                    else "the transmission device"
                )
                manual.append(f"{where} by operator {o.operator}")
            continue
        else:
            continue
        if o.flags & FIRE:
            fires.append(name)
        if o.flags & fault:
            faults.append(name)
    parts = [
        f"{what}: {_names(names)}"
        for what, names in (("FIRE ALARMS", fires), ("MANUAL ALARMS", manual), ("FAULTS", faults))
        if names
    ]
    return f"it carries {'; '.join(parts)}" if parts else ""


def _names(names: list[str]) -> str:
    shown = ", ".join(names[:SUMMARY_NAMES])
    more = len(names) - SUMMARY_NAMES
    return f"{shown} and {more} more" if more > 0 else shown


def valid_ids(translation: Translation) -> str | None:
    """None when every device id fits the contract; else what is wrong."""
    for cid in translation.components:
        if not ID_RE.match(cid):
            return f"device id {cid!r} does not fit [A-Za-z0-9_-]{{1,64}} (shorten the uitd id)"
    return None
