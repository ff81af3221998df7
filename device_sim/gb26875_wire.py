"""GB/T 26875.3 frames as a transmission device writes them, and the few checks a
monitoring centre's conformance test needs. The simulator's own code, written
from the protocol summary (docs/gb26875.md): it shares nothing with the
gateway (gateways/gb26875), so a misreading of the protocol in one of them
shows up as a disagreement instead of hiding in both.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Final

CST_MIN: Final = 480  # the devices' clock: UTC+8
SEND_DATA: Final = 2
CONFIRM: Final = 3
FRAME_FIXED: Final = 30
DESC_BYTES: Final = 31
# Object sizes (time label included) of the types the simulator sends or checks.
OBJECT_BYTES: Final = {1: 10, 2: 46, 3: 16, 4: 10, 21: 7, 24: 8, 28: 6}


def time_label(ms: int, utc_offset_min: int = CST_MIN) -> bytes:
    t = datetime.fromtimestamp(ms / 1000, tz=timezone(timedelta(minutes=utc_offset_min)))
    return bytes((t.second, t.minute, t.hour, t.day, t.month, t.year - 2000))


def label_to_ms(label: bytes, utc_offset_min: int = CST_MIN) -> int | None:
    s, mi, h, d, mo, y = label
    try:
        t = datetime(2000 + y, mo, d, h, mi, s, tzinfo=timezone(timedelta(minutes=utc_offset_min)))
    except ValueError:
        return None
    return int(t.timestamp() * 1000)


def encode(
    serial: int,
    command: int,
    data: bytes,
    *,
    source: bytes,
    destination: bytes = bytes(6),
    label: bytes,
    version: tuple[int, int] = (1, 0),
) -> bytes:
    control = struct.pack("<HBB", serial & 0xFFFF, *version) + label + source + destination
    control += struct.pack("<HB", len(data), command)
    body = control + data
    return b"@@" + body + bytes((sum(body) & 0xFF,)) + b"##"


def description(text: str) -> bytes:
    raw = text.encode("gb18030")[:DESC_BYTES]
    return raw + bytes(DESC_BYTES - len(raw))


def component_object(
    st: int, sa: int, ct: int, ca: int, flags: int, text: str, label: bytes
) -> bytes:
    return struct.pack("<BBBIH", st, sa, ct, ca, flags) + description(text) + label


def analog_object(st: int, sa: int, ct: int, ca: int, kind: int, value: int, label: bytes) -> bytes:
    return struct.pack("<BBBIBh", st, sa, ct, ca, kind, value) + label


def system_object(st: int, sa: int, flags: int, label: bytes) -> bytes:
    return struct.pack("<BBH", st, sa, flags) + label


def uitd_object(flags: int, label: bytes) -> bytes:
    return bytes((flags,)) + label


def data_unit(type_: int, objects: list[bytes]) -> bytes:
    return bytes((type_, len(objects))) + b"".join(objects)


# --- reading what comes over the wire (the centre's side, for conformance) ------


@dataclass(frozen=True, slots=True)
class Seen:
    """A frame as seen on the wire; `problem` says what is wrong with it, if anything."""

    raw: bytes
    serial: int
    command: int
    data: bytes
    source: bytes
    label: bytes
    version: tuple[int, int]
    problem: str = ""


def split(buffer: bytearray) -> list[Seen]:
    """Take complete frames off the front of `buffer` (in place)."""
    out: list[Seen] = []
    while True:
        i = buffer.find(b"@@")
        if i < 0:
            if len(buffer) > 1:
                out.append(_junk(bytes(buffer[:-1])))
                del buffer[:-1]
            return out
        if i:
            out.append(_junk(bytes(buffer[:i])))
            del buffer[:i]
        if len(buffer) < 27:
            return out
        n = buffer[24] | buffer[25] << 8
        if n > 1024:
            out.append(_junk(bytes(buffer[:27]), f"length {n} over 1024"))
            del buffer[:1]
            continue
        if len(buffer) < FRAME_FIXED + n:
            return out
        raw = bytes(buffer[: FRAME_FIXED + n])
        if raw[-2:] != b"##":
            out.append(_junk(raw, "no `##` where the length says the frame ends"))
            del buffer[:1]
            continue
        del buffer[: FRAME_FIXED + n]
        problem = ""
        if sum(raw[2 : 27 + n]) & 0xFF != raw[27 + n]:
            problem = "bad checksum"
        out.append(
            Seen(
                raw,
                raw[2] | raw[3] << 8,
                raw[26],
                raw[27 : 27 + n],
                raw[12:18],
                raw[6:12],
                (raw[4], raw[5]),
                problem,
            )
        )


def _junk(raw: bytes, problem: str = "bytes outside any frame") -> Seen:
    return Seen(raw, -1, -1, b"", b"", b"", (0, 0), problem)


def confirm(seen: Seen, label: bytes) -> bytes:
    return encode(
        seen.serial, CONFIRM, b"", source=bytes(6), destination=seen.source, label=label,
        version=seen.version,
    )  # fmt: skip
