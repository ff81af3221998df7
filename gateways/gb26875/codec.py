"""GB/T 26875.3-2011 frames: reassembly from a byte stream and decoding. Pure, no I/O.

The layout is the one of docs/gb26875-protocol.md (docs/gb26875.md): `@@`, a
25-byte control unit (serial, version, time label, source, destination,
length N, command), N bytes of application data, a checksum (sum of the
control unit and the data, modulo 256) and `##`. Integers are little-endian.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Final

START: Final = b"@@"
END: Final = b"##"
HEADER_LEN: Final = 27  # start (2) + control unit (25)
OVERHEAD: Final = 30  # header + checksum (1) + end (2)
MAX_ADU: Final = 1024  # the standard's bound on N
MAX_FRAME: Final = OVERHEAD + MAX_ADU
# A start marker whose length field (bytes 24-25, little-endian) can be at
# most MAX_ADU: its high byte at most 4. Found by the regular expression engine
# in C, so a flood of false starts (`@@` repeated) costs no Python per byte.
_PLAUSIBLE_START: Final = re.compile(
    re.escape(START) + rb".{22}." + bytes([ord("["), 0x00, ord("-"), MAX_ADU >> 8, ord("]")]),
    re.DOTALL,
)
TIME_LABEL_LEN: Final = 6
DESCRIPTION_LEN: Final = 31
DEFAULT_UTC_OFFSET_MIN: Final = 480  # devices keep China Standard Time (UTC+8)

# Commands (control unit byte 26).
CMD_CONTROL, CMD_SEND, CMD_CONFIRM, CMD_REQUEST, CMD_REPLY, CMD_DENY = range(1, 7)

# Application data unit types decoded here.
T_SYSTEM_STATUS: Final = 1
T_COMPONENT_STATUS: Final = 2
T_ANALOG: Final = 3
T_SYSTEM_OPERATION: Final = 4
T_UITD_STATUS: Final = 21
T_UITD_OPERATION: Final = 24
T_UITD_CLOCK: Final = 28
# Bytes of one information object, its 6-byte time label included.
OBJECT_SIZE: Final = {
    T_SYSTEM_STATUS: 4 + TIME_LABEL_LEN,
    T_COMPONENT_STATUS: 9 + DESCRIPTION_LEN + TIME_LABEL_LEN,
    T_ANALOG: 10 + TIME_LABEL_LEN,
    T_SYSTEM_OPERATION: 4 + TIME_LABEL_LEN,
    T_UITD_STATUS: 1 + TIME_LABEL_LEN,
    T_UITD_OPERATION: 2 + TIME_LABEL_LEN,
    T_UITD_CLOCK: TIME_LABEL_LEN,
}
# Bytes of an object's head that say what it reports (its device and its state,
# or its value): an object cut short is still decoded from a head this long
# (the rest of a component's description and the time label may be missing).
# A clock object is nothing but its label.
OBJECT_HEAD: Final = {
    T_SYSTEM_STATUS: 4,
    T_COMPONENT_STATUS: 9,
    T_ANALOG: 10,
    T_SYSTEM_OPERATION: 4,
    T_UITD_STATUS: 1,
    T_UITD_OPERATION: 2,
}
# A status object cut inside its two status bytes still says, in the first of
# them, whether it is in fire alarm (bits 0-7: test, fire, fault, shielded,
# ...); the second (power fault and the rest) is then unknown.
OBJECT_LOW_HEAD: Final = {T_SYSTEM_STATUS: 3, T_COMPONENT_STATUS: 8}
# Types whose objects report alarm states (fire, fault; an operation record's
# manual alarm).
STATE_TYPES: Final = frozenset(
    {T_SYSTEM_STATUS, T_COMPONENT_STATUS, T_SYSTEM_OPERATION, T_UITD_STATUS, T_UITD_OPERATION}
)

# Status bits (bit 0 is "normal (1) / test (0)" everywhere).
SYS_BITS: Final = (
    "normal",
    "fire",
    "fault",
    "shielded",
    "supervisory",
    "started",
    "feedback",
    "delay",
    "main_power_fault",
    "backup_power_fault",
    "bus_fault",
    "manual",
    "config_changed",
    "reset",
)
COMP_BITS: Final = (
    "normal",
    "fire",
    "fault",
    "shielded",
    "supervisory",
    "started",
    "feedback",
    "delay",
    "power_fault",
)
UITD_BITS: Final = (
    "normal",
    "fire",
    "fault",
    "main_power_fault",
    "backup_power_fault",
    "channel_fault",
    "controller_line_fault",
)
# Operation records (types 4 and 24), bit by bit from bit 0.
OPERATION_BITS: Final = (
    "reset",
    "silence",
    "manual_alarm",
    "alarm_cleared",
    "self_test",
    "confirm",
    "test",
)


def bit(flags: int, name: str, names: tuple[str, ...]) -> bool:
    return bool(flags >> names.index(name) & 1)


def set_bits(flags: int, names: tuple[str, ...]) -> list[str]:
    return [n for i, n in enumerate(names) if flags >> i & 1]


# --- the frame ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Frame:
    serial: int
    version: tuple[int, int]
    time_label: bytes  # 6 bytes as sent
    source: bytes  # 6 bytes, low byte first (as sent)
    destination: bytes
    command: int
    adu: bytes
    raw: bytes

    @property
    def source_hex(self) -> str:
        """The source address as 12 hex digits, most significant first."""
        return address_hex(self.source)

    @property
    def is_heartbeat(self) -> bool:
        return self.command == CMD_SEND and not self.adu


@dataclass(frozen=True, slots=True)
class BadFrame:
    """Bytes that started like a frame but are not one, or a run of bytes outside
    any frame. `raw` is at most JUNK_KEEP bytes for a run: `size` is its length."""

    raw: bytes
    reason: str  # bad_checksum, garbage
    detail: str
    size: int = -1  # bytes covered when `raw` is only their head

    @property
    def length(self) -> int:
        return self.size if self.size >= 0 else len(self.raw)


# A run of junk keeps its first bytes (what an operator needs to see what was
# sent) and its length: the reject store keeps 4 KiB of a payload too.
JUNK_KEEP: Final = 4096


def address_hex(addr: bytes) -> str:
    return addr[::-1].hex().upper()


def address_bytes(hex_digits: str) -> bytes:
    return bytes.fromhex(hex_digits)[::-1]


def checksum(body: bytes | bytearray) -> int:
    return sum(body) & 0xFF


class FrameReader:
    """Splits a TCP byte stream into frames. Feed it what each read returns.

    Several frames in one read, a frame split across reads and junk between
    frames are all normal. A frame with a wrong checksum yields a `BadFrame`
    with its bytes. Everything else that is not a frame (bytes before a `@@`,
    a false start: a length field beyond 1024 or no `##` where the length says
    the frame ends, after which the reader resynchronises on the next `@@`) is
    junk: one contiguous run of it is reported as one `garbage` BadFrame (its
    first JUNK_KEEP bytes, its length, how many false starts) when the next
    frame begins, or when the caller asks (`flush_junk`, `finish`). A flood of
    junk costs a handful of reports, not one per byte. The buffer never holds
    more than one frame, and a run never more than JUNK_KEEP bytes.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._junk = bytearray()  # the head of the current run
        self._junk_size = 0
        self._false_starts = 0
        self._first_false_start = ""
        self._tail = 0  # bytes of an incomplete frame at the end of the stream
        self._continued = False  # the run goes on from a report already made

    def feed(self, data: bytes) -> list[Frame | BadFrame]:
        self._buf += data
        out: list[Frame | BadFrame] = []
        buf = self._buf
        while True:
            found = _PLAUSIBLE_START.search(buf)
            if found is not None:
                start = found.start()
            else:
                # Only a start whose header is still incomplete may be one (a
                # trailing '@' may be half a marker); the rest is junk.
                start = buf.find(START, max(len(buf) - HEADER_LEN + 1, 0))
                if start < 0:
                    start = len(buf) - (1 if buf.endswith(b"@") else 0)
            if start > 0:
                self._skip(buf, start)
                del buf[:start]
            if len(buf) < HEADER_LEN:
                break
            n = buf[24] | buf[25] << 8
            if n > MAX_ADU:
                self._false_start(buf, f"length {n} > {MAX_ADU}")
                del buf[:1]  # resynchronise on the next start marker
                continue
            total = OVERHEAD + n
            if len(buf) < total:
                # Wait for the rest, unless a complete frame already starts inside
                # it: then this start is a false one (junk with a plausible length
                # field must not hold back the frames behind it).
                later = _complete_frame_after(buf)
                if later < 0:
                    break
                self._false_start(buf, f"a complete frame starts {later} bytes later", later)
                del buf[:later]
                continue
            if buf[total - 2 : total] != END:
                self._false_start(buf, f"no `##` where length {n} says the frame ends")
                del buf[:1]
                continue
            raw = bytes(buf[:total])
            del buf[:total]
            run = self._end_run()
            if run is not None:
                out.append(run)
            want = checksum(raw[2 : HEADER_LEN + n])
            if raw[HEADER_LEN + n] != want:
                out.append(
                    BadFrame(
                        raw,
                        "bad_checksum",
                        f"checksum {raw[HEADER_LEN + n]:#04x}, computed {want:#04x}",
                    )
                )
                continue
            out.append(parse_frame(raw))
        return out

    @property
    def pending(self) -> int:
        """Bytes held: the start of a frame not complete yet, and an open junk run."""
        return len(self._buf) + self._junk_size

    @property
    def junk_pending(self) -> int:
        """Bytes of the open junk run (not reported yet)."""
        return self._junk_size

    def flush_junk(self) -> BadFrame | None:
        """The open junk run so far, if any (it may go on: later bytes are reported
        as its continuation). For a caller that reports a long run as it goes."""
        return self._end_run(continues=True)

    def finish(self) -> BadFrame | None:
        """The stream ended: the open run and any incomplete frame, as one report."""
        if self._buf:
            self._tail = len(self._buf)
            self._add_junk(self._buf, len(self._buf))
            self._buf.clear()
        return self._end_run()

    def _add_junk(self, buf: bytearray, n: int) -> None:
        room = JUNK_KEEP - len(self._junk)
        if room > 0:
            self._junk += buf[: min(n, room)]
        self._junk_size += n

    def _skip(self, buf: bytearray, n: int) -> None:
        """Junk up to `n`: its start markers are false starts, their length
        fields beyond MAX_ADU (else `_PLAUSIBLE_START` would have stopped there)."""
        first = buf.find(START, 0, n + 1)  # (one may begin on the last junk byte)
        if first >= 0 and first + HEADER_LEN <= len(buf):
            if not self._false_starts:
                length = buf[first + 24] | buf[first + 25] << 8
                self._first_false_start = f"length {length} > {MAX_ADU}"
            self._false_starts += buf.count(START, first, n + 1)
        self._add_junk(buf, n)

    def _false_start(self, buf: bytearray, why: str, n: int = 1) -> None:
        if not self._false_starts:
            self._first_false_start = why
        self._false_starts += 1
        self._add_junk(buf, n)

    def _end_run(self, continues: bool = False) -> BadFrame | None:
        if not self._junk_size:
            return None
        size = self._junk_size
        detail = f"{size} byte(s) outside any frame"
        if self._continued:
            detail += " (a run already reported goes on)"
        if self._false_starts:
            detail += (
                f", {self._false_starts} false frame start(s) (first: {self._first_false_start})"
            )
        if self._tail:
            detail += f", the last {self._tail} an incomplete frame when the stream ended"
        if size > len(self._junk):
            detail += f"; first {len(self._junk)} bytes kept"
        bad = BadFrame(bytes(self._junk), "garbage", detail, size)
        self._junk.clear()
        self._junk_size = 0
        self._false_starts = 0
        self._first_false_start = ""
        self._tail = 0
        self._continued = continues
        return bad


def _complete_frame_after(buf: bytearray) -> int:
    """Where a later `@@` in `buf` starts a complete frame (length, `##` and
    checksum right), or -1. `buf` holds less than one frame here: bounded work."""
    i = buf.find(START, 1)
    while i >= 0 and len(buf) - i >= OVERHEAD:
        n = buf[i + 24] | buf[i + 25] << 8
        end = i + OVERHEAD + n
        if (
            n <= MAX_ADU
            and end <= len(buf)
            and buf[end - 2 : end] == END
            and buf[end - 3] == checksum(buf[i + 2 : end - 3])
        ):
            return i
        i = buf.find(START, i + 1)
    return -1


def parse_frame(raw: bytes) -> Frame:
    """A frame whose framing and checksum were checked."""
    serial = raw[2] | raw[3] << 8
    n = raw[24] | raw[25] << 8
    return Frame(
        serial=serial,
        version=(raw[4], raw[5]),
        time_label=raw[6:12],
        source=raw[12:18],
        destination=raw[18:24],
        command=raw[26],
        adu=raw[HEADER_LEN : HEADER_LEN + n],
        raw=raw,
    )


def build_frame(
    *,
    serial: int,
    version: tuple[int, int],
    time_label: bytes,
    source: bytes,
    destination: bytes,
    command: int,
    adu: bytes = b"",
) -> bytes:
    """The gateway's own frames (confirms). The simulator has its own encoder."""
    body = (
        struct.pack("<HBB", serial & 0xFFFF, *version)
        + time_label
        + source
        + destination
        + struct.pack("<HB", len(adu), command)
        + adu
    )
    return START + body + bytes([checksum(body)]) + END


def confirm_for(frame: Frame, time_label: bytes) -> bytes:
    """Command 3 with the request's serial number, addresses swapped."""
    return answer_for(frame, time_label, CMD_CONFIRM)


def answer_for(frame: Frame, time_label: bytes, command: int) -> bytes:
    """An answer without data (confirm 3 or deny 6): the request's serial
    number, addresses swapped."""
    return build_frame(
        serial=frame.serial,
        version=frame.version,
        time_label=time_label,
        source=frame.destination,
        destination=frame.source,
        command=command,
    )


# --- time labels -------------------------------------------------------------


def clock(tz: int | tzinfo) -> tzinfo:
    """A device clock's zone: minutes east of UTC, or a zone (DST-aware)."""
    return timezone(timedelta(minutes=tz)) if isinstance(tz, int) else tz


def label_ms(label: bytes, tz: int | tzinfo = DEFAULT_UTC_OFFSET_MIN) -> int | None:
    """Epoch ms of a time label in the sender's local time; None if not a date."""
    if len(label) != TIME_LABEL_LEN:
        return None
    sec, minute, hour, day, month, year = label
    try:
        local = datetime(2000 + year, month, day, hour, minute, sec, tzinfo=clock(tz))
    except ValueError:
        return None
    return int(local.timestamp() * 1000)


def make_label(ms: int, tz: int | tzinfo = DEFAULT_UTC_OFFSET_MIN) -> bytes:
    t = datetime.fromtimestamp(ms / 1000, tz=clock(tz))
    return bytes([t.second, t.minute, t.hour, t.day, t.month, (t.year - 2000) & 0xFF])


# --- application data ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SystemStatus:
    system_type: int
    system_address: int
    flags: int
    label: bytes
    flags_known: int = 0xFFFF  # bits sent (0x00FF: cut after the first status byte)


@dataclass(frozen=True, slots=True)
class ComponentStatus:
    system_type: int
    system_address: int
    component_type: int
    component_address: int
    flags: int
    description: str
    label: bytes
    flags_known: int = 0xFFFF  # bits sent (0x00FF: cut after the first status byte)


@dataclass(frozen=True, slots=True)
class Analog:
    system_type: int
    system_address: int
    component_type: int
    component_address: int
    analog_type: int
    value: int  # signed, in the analog type's unit
    label: bytes


@dataclass(frozen=True, slots=True)
class SystemOperation:
    system_type: int
    system_address: int
    flags: int
    operator: int
    label: bytes


@dataclass(frozen=True, slots=True)
class UitdStatus:
    flags: int
    label: bytes


@dataclass(frozen=True, slots=True)
class UitdOperation:
    flags: int
    operator: int
    label: bytes


@dataclass(frozen=True, slots=True)
class UitdClock:
    label: bytes


InfoObject = (
    SystemStatus
    | ComponentStatus
    | Analog
    | SystemOperation
    | UitdStatus
    | UitdOperation
    | UitdClock
)


@dataclass(frozen=True, slots=True)
class Adu:
    type: int
    objects: list[InfoObject] = field(default_factory=list)
    raw_objects: list[bytes] = field(default_factory=list)  # each object's bytes, as sent
    known: bool = True  # False: a type this gateway does not decode (kept as it came)
    # The length does not match type and count: what is wrong (the complete
    # objects it holds are decoded all the same, and an object cut short from
    # its head: a fire alarm must not be lost to a panel's miscounted frame).
    problem: str | None = None
    # An announced object cut short before it said what it reports (its status
    # or value): it may carry a fire alarm nobody can read.
    unreadable: str | None = None


class AduError(ValueError):
    """Application data that does not match its declared type and count."""


def description(raw: bytes) -> str:
    """GB 18030 text, NUL padded; undecodable bytes become U+FFFD, never an error."""
    text = raw.split(b"\x00", 1)[0].decode("gb18030", errors="replace")
    return text.strip()


def decode_adu(adu: bytes) -> Adu:
    if len(adu) < 2:
        raise AduError(f"application data of {len(adu)} byte(s): no type and count")
    typ, count = adu[0], adu[1]
    size = OBJECT_SIZE.get(typ)
    if size is None:
        return Adu(typ, known=False)
    raws = [adu[2 + i * size : 2 + (i + 1) * size] for i in range((len(adu) - 2) // size)]
    # Past the count, complete objects whose time label is a date are objects
    # too (a panel that miscounts must not lose a fire); bytes that merely fill
    # one are not.
    extra = 0
    while count + extra < len(raws) and label_ms(raws[count + extra][-TIME_LABEL_LEN:]):
        extra += 1
    raws = raws[: count + extra]
    objects = [_object(typ, r) for r in raws]
    problem = unreadable = None
    if len(adu) != 2 + count * size:
        problem = (
            f"type {typ} with {count} object(s) of {size} bytes needs {2 + count * size} "
            f"bytes, got {len(adu)}; the {len(raws)} complete object(s) in it were taken"
        )
    # An announced object cut short (the frame ends inside it): taken from its
    # head when that says what it reports, without its time label (the frame's
    # time is used); else it is unreadable, and said so.
    cut = adu[2 + len(raws) * size :] if len(raws) < count else b""
    if cut and problem is not None:  # (always: the frame is shorter than its count)
        which = f"object {len(raws) + 1}, cut short after {len(cut)} of its {size} bytes"
        head = OBJECT_HEAD.get(typ)
        low = OBJECT_LOW_HEAD.get(typ, head)
        if head is not None and low is not None and len(cut) >= low:
            objects.append(_object(typ, cut, cut=True))
            raws.append(cut)
            problem += f", and {which}, from its head (no time label: the frame's time)"
            if len(cut) < head:
                problem += (
                    "; its second status byte missing (power fault and the bits above"
                    " it kept as last known)"
                )
        else:
            lost = (
                "it MAY CARRY A FIRE ALARM OR A FAULT, check the panel"
                if typ in STATE_TYPES
                else "what it reports is lost"
            )
            unreadable = f"{which}, before it says what it reports: {lost}"
            problem += f"; {unreadable}"
    return Adu(typ, objects, raws, problem=problem, unreadable=unreadable)


def _object(typ: int, o: bytes, *, cut: bool = False) -> InfoObject:
    """One object from its bytes; `cut`: only its head (OBJECT_HEAD bytes or
    more), its time label missing (b"")."""
    label = b"" if cut else o[-TIME_LABEL_LEN:]
    known = 0xFFFF if len(o) > OBJECT_LOW_HEAD.get(typ, 0) else 0x00FF
    if typ == T_SYSTEM_STATUS:
        return SystemStatus(o[0], o[1], o[2] | (o[3] if len(o) > 3 else 0) << 8, label, known)
    if typ == T_COMPONENT_STATUS:
        (addr,) = struct.unpack_from("<I", o, 3)
        text = o[9 : 9 + DESCRIPTION_LEN]
        shown = description(text)
        if cut and text and len(text) < DESCRIPTION_LEN and b"\x00" not in text:
            # Text cut short: a character cut in two is dropped, the cut shown.
            shown = text.decode("gb18030", errors="ignore").strip() + "..."
        second = o[8] if len(o) > 8 else 0
        return ComponentStatus(o[0], o[1], o[2], addr, o[7] | second << 8, shown, label, known)
    if typ == T_ANALOG:
        (addr,) = struct.unpack_from("<I", o, 3)
        (value,) = struct.unpack_from("<h", o, 8)
        return Analog(o[0], o[1], o[2], addr, o[7], value, label)
    if typ == T_SYSTEM_OPERATION:
        return SystemOperation(o[0], o[1], o[2], o[3], label)
    if typ == T_UITD_STATUS:
        return UitdStatus(o[0], label)
    if typ == T_UITD_OPERATION:
        return UitdOperation(o[0], o[1], label)
    return UitdClock(label)


def iter_frames(data: bytes) -> Iterator[Frame | BadFrame]:
    """Every frame of a complete byte string (tests, conformance)."""
    reader = FrameReader()
    yield from reader.feed(data)
    rest = reader.finish()
    if rest is not None:
        yield rest
