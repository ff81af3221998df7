"""GB/T 26875.3 frames built by hand from the protocol summary (docs/gb26875-protocol.md),
byte by byte, for the gateway's tests. Deliberately not the gateway's encoder
(gateways.gb26875.codec) nor the simulator's (device_sim.gb26875): a mistake
shared by the code under test and its tests would hide itself.
"""

from __future__ import annotations

from datetime import datetime


def le16(n: int) -> bytes:
    return bytes([n & 0xFF, (n >> 8) & 0xFF])


def le32(n: int) -> bytes:
    return bytes([n & 0xFF, (n >> 8) & 0xFF, (n >> 16) & 0xFF, (n >> 24) & 0xFF])


def label(t: datetime) -> bytes:
    """Time label: second, minute, hour, day, month, year - 2000 (local clock)."""
    return bytes([t.second, t.minute, t.hour, t.day, t.month, t.year - 2000])


def frame(
    serial: int,
    adu: bytes,
    *,
    source: bytes = b"\x01\x00\x00\x00\x00\x00",
    destination: bytes = b"\x00\x00\x00\x00\x00\x00",
    command: int = 2,
    when: datetime = datetime(2026, 3, 14, 9, 26, 53),
    version: bytes = b"\x01\x00",
    bad_checksum: bool = False,
) -> bytes:
    """`@@`, control unit, data, checksum (sum of bytes 2 .. 26+N mod 256), `##`."""
    control = le16(serial) + version + label(when) + source + destination
    control += le16(len(adu)) + bytes([command])
    body = control + adu
    total = 0
    for b in body:
        total += b
    check = total % 256
    if bad_checksum:
        check = (check + 1) % 256
    return b"\x40\x40" + body + bytes([check]) + b"\x23\x23"


def gb(text: str, size: int = 31) -> bytes:
    raw = text.encode("gb18030")
    assert len(raw) <= size
    return raw + b"\x00" * (size - len(raw))


def component_status(
    system_type: int,
    system_address: int,
    component_type: int,
    component_address: int,
    flags: int,
    description: str,
    when: datetime,
) -> bytes:
    """One type-2 object: 1+1+1+4 bytes of address, 2 of flags, 31 of text, 6 of time."""
    return (
        bytes([system_type, system_address, component_type])
        + le32(component_address)
        + le16(flags)
        + gb(description)
        + label(when)
    )


def adu(type_: int, *objects: bytes) -> bytes:
    return bytes([type_, len(objects)]) + b"".join(objects)


def system_status(system_type: int, system_address: int, flags: int, when: datetime) -> bytes:
    return bytes([system_type, system_address]) + le16(flags) + label(when)


def analog(
    system_type: int,
    system_address: int,
    component_type: int,
    component_address: int,
    analog_type: int,
    value: int,
    when: datetime,
) -> bytes:
    raw = value & 0xFFFF  # signed 16-bit, two's complement
    return (
        bytes([system_type, system_address, component_type])
        + le32(component_address)
        + bytes([analog_type])
        + le16(raw)
        + label(when)
    )


def uitd_status(flags: int, when: datetime) -> bytes:
    return bytes([flags]) + label(when)


# The worked frame of the summary, written out: serial 7, version 1.0, time
# 09:26:53 14.03.26, source 1, destination 0, N = 48, send data; one type-2
# object: system 1/1, photoelectric detector (42) at 0x00000105, flags
# normal + fire, "3F东走廊" in GB 18030 (33 46 B6 AB D7 DF C0 C8), same time.
WORKED_BODY = bytes.fromhex(
    "0700" "0100" "351a090e031a" "010000000000" "000000000000" "3000" "02"
    "0201" "01012a05010000" "0300"
    "3346b6abd7dfc0c8" + "00" * 23 + "351a090e031a"
)  # fmt: skip
WORKED_FRAME = b"@@" + WORKED_BODY + bytes([sum(WORKED_BODY) % 256]) + b"##"
