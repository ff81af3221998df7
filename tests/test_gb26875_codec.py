"""The gateway's pure parts: reassembly, checks, decoding, and the mapping to
contract messages, on frames written out by hand (tests/gb26875_frames.py)."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from gateways.gb26875 import codec as c
from gateways.gb26875.mapping import Translator, Uitd, component_kind
from tests.gb26875_frames import (
    WORKED_FRAME,
    adu,
    analog,
    component_status,
    frame,
    system_status,
    uitd_status,
)

T = datetime(2026, 3, 14, 9, 26, 53)
T_MS = int(datetime(2026, 3, 14, 1, 26, 53, tzinfo=UTC).timestamp() * 1000)  # UTC+8
UITD = Uitd(id="UITD-7", site="S1", building="B1", floor="1", zone="Z1")
T_LABEL = bytes([53, 26, 9, 14, 3, 26])  # T as a time label


def frames(items: list[c.Frame | c.BadFrame]) -> list[c.Frame]:
    return [f for f in items if isinstance(f, c.Frame)]


def test_worked_frame_decodes() -> None:
    out = c.FrameReader().feed(WORKED_FRAME)
    assert len(out) == 1
    assert isinstance(out[0], c.Frame)
    f = out[0]
    assert (f.serial, f.version, f.command, f.source_hex) == (7, (1, 0), 2, "000000000001")
    assert len(f.adu) == 48
    a = c.decode_adu(f.adu)
    assert a.type == 2
    assert len(a.objects) == 1
    obj = a.objects[0]
    assert isinstance(obj, c.ComponentStatus)
    assert (obj.system_type, obj.system_address, obj.component_type) == (1, 1, 42)
    assert obj.component_address == 0x105 == 261
    assert obj.flags == 0x0003
    assert obj.description == "3F东走廊"
    assert c.label_ms(obj.label) == T_MS
    assert c.label_ms(obj.label, tz=0) == T_MS + 8 * 3_600_000


def test_every_split_point_and_coalesced_frames_with_garbage() -> None:
    two = WORKED_FRAME + frame(8, b"")
    for cut in range(1, len(two)):
        reader = c.FrameReader()
        got = frames(reader.feed(two[:cut]) + reader.feed(two[cut:]))
        assert [f.serial for f in got] == [7, 8], cut
        assert reader.pending == 0
    noisy = b"\x00junk@" + WORKED_FRAME + b"##\xff" + frame(9, b"") + b"@"
    out = c.FrameReader().feed(noisy)
    assert [f.serial for f in frames(out)] == [7, 9]
    # Each run of junk is one report with its bytes, the stray '@' (a false start)
    # in the first; nothing is lost but the trailing '@' the reader still holds.
    bad = [b for b in out if isinstance(b, c.BadFrame)]
    assert [(b.reason, b.raw, b.length) for b in bad] == [
        ("garbage", b"\x00junk@", 6),
        ("garbage", b"##\xff", 3),
    ]
    assert "1 false frame start(s)" in bad[0].detail
    assert sum(b.length for b in bad) + len(WORKED_FRAME) + 30 == len(noisy) - 1


def test_serial_0x40_is_not_mistaken_for_a_stray_start() -> None:
    f = frame(0x4040, b"") + frame(0x0140, b"")
    assert [x.serial for x in frames(c.FrameReader().feed(b"@" + f))] == [0x4040, 0x0140]


def test_bad_checksum_is_reported_with_its_bytes_and_the_next_frame_survives() -> None:
    bad = frame(5, adu(21, uitd_status(0x01, T)), bad_checksum=True)
    out = c.FrameReader().feed(bad + frame(6, b""))
    assert isinstance(out[0], c.BadFrame)
    assert out[0].reason == "bad_checksum"
    assert out[0].raw == bad
    assert [f.serial for f in frames(out)] == [6]


def test_bad_length_resynchronises() -> None:
    good = frame(3, b"")
    # Length field says 2000 (> 1024).
    too_long = bytearray(frame(4, b""))
    too_long[24:26] = (2000).to_bytes(2, "little")
    out = c.FrameReader().feed(bytes(too_long) + good)
    assert isinstance(out[0], c.BadFrame)
    assert out[0].reason == "garbage"
    assert "length 2000 > 1024" in out[0].detail
    assert out[0].raw == bytes(too_long)  # one report for the whole false frame
    assert [f.serial for f in frames(out)] == [3]
    # Length says 1 byte more than there is: `##` not where it should be.
    short = bytearray(frame(4, adu(28, bytes(6))))
    short[24] += 1
    out = c.FrameReader().feed(bytes(short) + good + good)
    assert any(isinstance(b, c.BadFrame) and "no `##`" in b.detail for b in out)
    assert 3 in [f.serial for f in frames(out)]


def _feed_in_chunks(data: bytes, size: int) -> tuple[c.FrameReader, list[c.Frame | c.BadFrame]]:
    reader = c.FrameReader()
    out: list[c.Frame | c.BadFrame] = []
    for i in range(0, len(data), size):
        out += reader.feed(data[i : i + size])
    return reader, out


@pytest.mark.parametrize("chunk", [1, 7, 4096, 1 << 20])
def test_a_junk_flood_is_one_report_and_the_frames_behind_it_survive(chunk: int) -> None:
    """`@@` repeated (every byte a false frame start) used to be one BadFrame per
    byte: 80,000 rejects for 80 kB. Now one per run: its length, its head."""
    flood = b"@@" * 40_000
    data = flood + frame(5, b"") + b"\x00" * 5000 + frame(6, b"")
    reader, out = _feed_in_chunks(data, chunk)
    assert [type(x).__name__ for x in out] == ["BadFrame", "Frame", "BadFrame", "Frame"]
    first, second = out[0], out[2]
    assert isinstance(first, c.BadFrame)
    assert isinstance(second, c.BadFrame)
    assert first.length == len(flood)
    assert first.raw == flood[: c.JUNK_KEEP]
    assert f"{len(flood)} byte(s) outside any frame" in first.detail
    assert "false frame start(s)" in first.detail
    assert f"first {c.JUNK_KEEP} bytes kept" in first.detail
    assert second.length == 5000
    assert len(second.raw) == c.JUNK_KEEP
    assert [f.serial for f in frames(out)] == [5, 6]
    assert reader.pending == 0


def test_an_open_run_is_reported_on_demand_and_at_the_end() -> None:
    reader = c.FrameReader()
    assert reader.feed(b"\xff" * 100) == []  # a run is reported when it ends
    assert reader.junk_pending == 100
    part = reader.flush_junk()
    assert part is not None
    assert part.length == 100
    assert reader.junk_pending == 0
    assert reader.flush_junk() is None
    assert reader.feed(b"\xfe" * 10 + b"@@\x01\x02") == []
    rest = reader.finish()  # the stream ended: the run and the incomplete frame
    assert rest is not None
    assert rest.raw == b"\xfe" * 10 + b"@@\x01\x02"
    assert "a run already reported goes on" in rest.detail
    assert "the last 4 an incomplete frame" in rest.detail
    assert reader.pending == 0
    assert reader.finish() is None


def test_a_plausible_false_length_does_not_hold_back_a_complete_frame() -> None:
    """`@@` + 22 bytes + a length of 256: the reader would wait for 286 bytes,
    but a complete, valid frame already starts inside them."""
    junk = b"@@" + bytes(22) + (256).to_bytes(2, "little")
    out = c.FrameReader().feed(junk + frame(9, b""))
    assert [f.serial for f in frames(out)] == [9]
    assert isinstance(out[0], c.BadFrame)
    assert out[0].raw == junk


def test_adu_sizes_are_checked_and_unknown_types_kept() -> None:
    with pytest.raises(c.AduError):
        c.decode_adu(bytes([2]))
    obj = component_status(1, 1, 42, 0x105, 0x0003, "3F", T)
    for data, whole in [
        (bytes([2, 2]) + obj, 1),  # two objects announced, one sent
        (bytes([2, 1]) + obj + b"\0\0", 1),  # two bytes too many
        (bytes([2, 1]) + obj + obj, 2),  # one announced, two sent (a recheck's lost fire)
        (bytes([2, 0]) + obj, 1),
        (bytes([2, 1]) + obj + bytes(46), 1),  # 46 more bytes are no object (no date)
        (bytes([2, 1]) + obj[:7], 0),  # cut short before its status: nothing to take
    ]:
        got = c.decode_adu(data)
        assert len(got.objects) == len(got.raw_objects) == whole
        assert got.problem is not None
        assert f"the {whole} complete object(s) in it were taken" in got.problem
    # Cut short (its time label missing): taken from its head, and said so.
    got = c.decode_adu(bytes([2, 1]) + obj[:-5])
    assert got.raw_objects == [obj[:-5]]
    assert got.problem is not None
    assert got.problem.endswith(
        "the 0 complete object(s) in it were taken, and object 1, cut short after 41 of "
        "its 46 bytes, from its head (no time label: the frame's time)"
    )
    assert c.decode_adu(bytes([2, 1]) + obj).problem is None
    unknown = c.decode_adu(bytes([0x99, 1, 1, 2, 3]))
    assert unknown.type == 0x99
    assert not unknown.known


@pytest.mark.parametrize(
    ("type_", "whole", "head", "at", "decoded"),
    [
        # The outside check's frame: a call point's first 20 bytes, in fire alarm.
        (
            2,
            component_status(1, 3, 23, 0x601, 0x0003, "短", T),
            8,  # (its first status byte: the fire bit)
            20,
            c.ComponentStatus(1, 3, 23, 0x601, 0x0003, "短", b""),
        ),
        # Its description cut in the middle of a character: the half dropped.
        (
            2,
            component_status(1, 3, 42, 0x602, 0x0005, "三楼东", T),
            8,
            12,
            c.ComponentStatus(1, 3, 42, 0x602, 0x0005, "三...", b""),
        ),
        (
            2,
            component_status(1, 3, 42, 0x603, 0x0003, "x", T),
            8,
            9,  # no text at all
            c.ComponentStatus(1, 3, 42, 0x603, 0x0003, "", b""),
        ),
        (1, system_status(1, 2, 0x0007, T), 3, 4, c.SystemStatus(1, 2, 0x0007, b"")),
        (3, analog(1, 1, 17, 9, 9, 35, T), 10, 10, c.Analog(1, 1, 17, 9, 9, 35, b"")),
        (21, uitd_status(0x07, T), 1, 1, c.UitdStatus(0x07, b"")),
        (4, bytes([1, 1, 0x04, 5]) + T_LABEL, 4, 4, c.SystemOperation(1, 1, 0x04, 5, b"")),
        (24, bytes([0x04, 5]) + T_LABEL, 2, 2, c.UitdOperation(0x04, 5, b"")),
    ],
    ids=["call_point", "text_cut", "no_text", "system", "analog", "uitd", "op", "uitd_op"],
)
def test_an_object_cut_short_is_taken_from_its_head(
    type_: int, whole: bytes, head: int, at: int, decoded: c.InfoObject
) -> None:
    """What says which device and its state (or value) is there: the object is
    taken without its time label (a fire must not be lost to an encoder's bug)."""
    for cut in range(head, len(whole)):
        got = c.decode_adu(bytes([type_, 1]) + whole[:cut])
        assert got.raw_objects == [whole[:cut]], cut
        [obj] = got.objects
        assert obj.label == b""
        if cut == at:
            assert obj == decoded
        assert got.unreadable is None
    # One byte less: it does not say what it reports, and the problem says so
    # (no byte of it at all is a miscount: not said).
    got = c.decode_adu(bytes([type_, 1]) + whole[: head - 1])
    assert got.objects == []
    if head == 1:
        assert got.unreadable is None
        return
    assert got.unreadable is not None
    said = "what it reports is lost" if type_ == 3 else "it MAY CARRY A FIRE ALARM OR A FAULT"
    assert said in got.unreadable
    assert got.problem is not None
    assert got.unreadable in got.problem


def test_a_clock_object_cut_short_is_nothing() -> None:
    got = c.decode_adu(bytes([28, 1]) + T_LABEL[:4])
    assert got.objects == []
    assert got.unreadable == (
        "object 1, cut short after 4 of its 6 bytes, before it says what it reports: "
        "what it reports is lost"
    )


def test_a_call_point_cut_short_is_activated_at_the_frames_time() -> None:
    """The outside check's serial 62: type 2, one object, its first 20 bytes."""
    obj = component_status(1, 3, 23, 0x601, 0x0003, "短", T)
    known = {"UITD-7_1_3_1537": 0x0001}
    msgs = _translate(bytes([2, 1]) + obj[:20], known)
    assert [(t, p["type"]) for t, p in msgs] == [("fs/v1/S1/UITD-7_1_3_1537/event", "activated")]
    assert msgs[0][1]["ts"] == T_MS  # the frame's label (the centre's clock agrees)
    assert msgs[0][1]["detail"] == (
        "短; flags=0x0003 (fire); object cut short (no time label): the frame's time taken"
    )
    # A resend is the same message (stored once).
    assert _translate(bytes([2, 1]) + obj[:20], known) == msgs


def test_confirm_echoes_serial_and_swaps_addresses() -> None:
    f = frames(c.FrameReader().feed(frame(513, b"", source=bytes([1, 2, 3, 4, 5, 6]))))[0]
    raw = c.confirm_for(f, bytes(6))
    assert raw[:2] == b"@@"
    assert raw[-2:] == b"##"
    assert raw[2:4] == bytes([1, 2])  # serial 513 little-endian
    assert raw[18:24] == bytes([1, 2, 3, 4, 5, 6])
    assert raw[26] == 3
    assert raw[24:26] == b"\0\0"
    assert raw[27] == sum(raw[2:27]) % 256


def _translate(
    raw_adu: bytes,
    known: dict[str, int] | None = None,
    serial: int = 1,
    *,
    when: datetime = T,
    arrival_ms: int = T_MS + 800,  # the centre's clock: the frame's label, 0.8 s later
    translator: Translator | None = None,
) -> list[tuple[str, dict[str, object]]]:
    f = frames(c.FrameReader().feed(frame(serial, raw_adu, when=when)))[0]
    tr = (translator or Translator("gw")).translate(
        f, c.decode_adu(f.adu), UITD, known or {}, arrival_ms
    )
    return [(m.topic, orjson.loads(m.payload)) for m in tr.messages]


@pytest.mark.parametrize(
    ("flags", "known", "types"),
    [
        (0x0001, None, ["panel_reset", "restore"]),  # first sight: the whole state
        (0x0003, None, ["panel_fire", "restore"]),
        (0x0003, 0x0001, ["panel_fire"]),  # fire bit 0 -> 1
        (0x0001, 0x0003, ["panel_reset"]),  # fire bit 1 -> 0: the panel's reset
        (0x0005, 0x0001, ["fault"]),  # fault
        (0x0001, 0x0005, ["restore"]),
        (0x0101, 0x0001, ["fault"]),  # power fault
        (0x0105, 0x0101, ["fault"]),  # another fault cause added
        (0x0009, 0x0001, ["shielded"]),
        (0x0001, 0x0009, ["unshielded"]),
        (0x0011, 0x0001, []),  # supervisory: a state shown in details only
        (0x0021, 0x0001, []),  # started
        (0x0041, 0x0001, []),  # feedback
        (0x0081, 0x0001, []),  # delay
        (0x0003, 0x0003, []),  # unchanged
        # Test mode (bit 0 clear): still an alarm, a person's to decide (`panel_test`).
        (0x0002, 0x0000, ["panel_test"]),
        (0x0003, 0x0002, ["panel_fire"]),  # test over, still raised: a real one
        (0x0001, 0x0002, ["panel_reset"]),
        (0x0002, 0x0003, []),  # a real one stays real under test
    ],
)
def test_component_status_bits(flags: int, known: int | None, types: list[str]) -> None:
    obj = component_status(1, 1, 42, 0x105, flags, "3F东走廊", T)
    states = {} if known is None else {"UITD-7_1_1_261": known}
    msgs = _translate(adu(2, obj), states)
    assert [p["type"] for _, p in msgs] == types
    for topic, p in msgs:
        assert topic == "fs/v1/S1/UITD-7_1_1_261/event"
        assert p["ts"] == T_MS
        assert str(p["detail"]).startswith("3F东走廊; flags=")


def test_call_point_fire_is_activated_and_reset() -> None:
    msgs = _translate(adu(2, component_status(1, 1, 23, 7, 0x0003, "一层大厅手报", T)), {})
    assert msgs[0][1]["type"] == "activated"
    msgs = _translate(
        adu(2, component_status(1, 1, 23, 7, 0x0001, "一层大厅手报", T)), {"UITD-7_1_1_7": 3}
    )
    assert [p["type"] for _, p in msgs] == ["reset"]


def test_resend_translates_identically_and_serial_changes_seq() -> None:
    raw = adu(2, component_status(1, 1, 42, 0x105, 0x0003, "3F东走廊", T))
    assert _translate(raw, serial=7) == _translate(raw, serial=7)
    assert _translate(raw, serial=7)[0][1]["seq"] != _translate(raw, serial=8)[0][1]["seq"]


def test_system_and_uitd_status() -> None:
    msgs = _translate(adu(1, system_status(1, 1, 0x0303, T)), {"UITD-7_1_1": 0x0001})
    assert [(t, p["type"]) for t, p in msgs] == [
        ("fs/v1/S1/UITD-7_1_1/event", "panel_fire"),
        ("fs/v1/S1/UITD-7_1_1/event", "fault"),
    ]
    assert "main_power_fault" in str(msgs[1][1]["detail"])
    msgs = _translate(adu(21, uitd_status(0b0100001, T)), {"UITD-7": 0x01})
    assert [(t, p["type"]) for t, p in msgs] == [("fs/v1/S1/UITD-7/event", "fault")]
    assert "channel_fault" in str(msgs[0][1]["detail"])


def test_analog_values_become_readings() -> None:
    raw = adu(
        3,
        analog(1, 1, 31, 12, 3, 253, T),  # heat detector: 25.3 °C
        analog(16, 2, 17, 5, 9, 3, T),  # residual-current detector: 0.3 A = 300 mA
        analog(16, 2, 18, 6, 3, -52, T),  # cable temperature -5.2 °C
        analog(11, 1, 0, 9, 4, 12, T),  # hydrant pressure 1.2 MPa
    )
    msgs = _translate(raw)
    assert len(msgs) == 1
    topic, body = msgs[0]
    assert topic == "fs/v1/S1/gateway/UITD-7/batch"
    readings = {r["device"]: r["v"] for r in body["readings"]}  # type: ignore[attr-defined]
    assert readings == {
        "UITD-7_1_1_12": {"temperature": 25.3},
        "UITD-7_16_2_5": {"residual_current": 300.0},
        "UITD-7_16_2_6": {"cable_temperature": -5.2},
        "UITD-7_11_1_9": {"pressure_mpa": 1.2},
    }


@pytest.mark.parametrize(
    ("system", "component", "kind"),
    [
        (1, 23, "mcp"),
        (1, 31, "heat"),
        (1, 37, "heat"),
        (1, 42, "smoke"),
        (1, 44, "smoke"),
        (1, 51, "multi"),
        (1, 17, "electrical"),
        (22, 42, "evac"),
        (1, 85, "point"),
        (1, 24, "point"),
    ],
)
def test_component_kinds(system: int, component: int, kind: str) -> None:
    assert component_kind(system, component) == kind


def test_undecodable_description_never_fails() -> None:
    obj = bytearray(component_status(1, 1, 42, 1, 1, "", T))
    obj[9:12] = b"\xff\xff\xff"
    a = c.decode_adu(adu(2, bytes(obj)))
    assert isinstance(a.objects[0], c.ComponentStatus)


def test_time_labels_fall_back_when_not_a_date() -> None:
    assert c.label_ms(bytes(6)) is None  # day 0, month 0
    obj = component_status(1, 1, 42, 1, 3, "x", T)
    obj = obj[:-6] + bytes(6)
    msgs = _translate(adu(2, obj))
    assert msgs[0][1]["ts"] == T_MS  # the frame's own time label


@pytest.mark.parametrize(
    ("uitd", "utc_hour"),
    [
        (UITD, 1),  # nothing set: UTC+8
        (Uitd("U", "S", "B", "1", "Z", timezone="UTC"), 1),  # the sites' default: UTC+8 still
        (Uitd("U", "S", "B", "1", "Z", timezone="Asia/Shanghai"), 1),
        (Uitd("U", "S", "B", "1", "Z", timezone="Europe/Berlin"), 8),  # CET in March
        (Uitd("U", "S", "B", "1", "Z", utc_offset_min=0, timezone="Asia/Tokyo"), 9),
    ],
)
def test_time_labels_in_the_sites_local_time(uitd: Uitd, utc_hour: int) -> None:
    f = frames(c.FrameReader().feed(WORKED_FRAME))[0]
    want = datetime(2026, 3, 14, utc_hour, 26, 53, tzinfo=UTC)
    arrival = int(want.timestamp() * 1000) + 500  # the centre's clock agrees
    tr = Translator("gw").translate(f, c.decode_adu(f.adu), uitd, {}, arrival)
    ts = orjson.loads(tr.messages[0].payload)["ts"]
    assert datetime.fromtimestamp(ts / 1000, UTC) == want


def test_a_uitd_clock_reset_to_2000_is_moved_to_the_centres_clock() -> None:
    """The outside check: a transmission device whose clock fell back to
    2000-01-01 after a power loss. Its fire alarm is dated by the centre's
    clock (the difference in whole minutes, rounded down: never in the future,
    and kept for the device, so a resend 20 s later is the same message and
    stored once, whatever the seconds), and says so; before 08:00 local (1999
    in UTC) it was rejected outright."""
    for hour in (12, 3):
        for seconds in (7, 37, 59):
            reset = datetime(2000, 1, 1, hour, 0, seconds)
            obj = component_status(1, 1, 42, 0x105, 0x0003, "3F东走廊", reset)
            gateway = Translator("gw")
            first = _translate(adu(2, obj), {"UITD-7_1_1_261": 1}, when=reset, translator=gateway)
            again = _translate(
                adu(2, obj),
                {"UITD-7_1_1_261": 1},
                when=reset,
                arrival_ms=T_MS + 20_800,
                translator=gateway,
            )
            assert first == again
            [(_, fire)] = first
            assert fire["type"] == "panel_fire"
            assert 0 <= T_MS + 800 - int(str(fire["ts"])) < 60_000
            detail = str(fire["detail"])
            assert f"uitd clock 2000-01-01T{hour:02d}:00:{seconds:02d}+08:00, 956" in detail
            assert "behind: times taken from the centre's clock" in detail


def test_labels_on_another_clock_than_their_frame() -> None:
    """The recheck's cases: (a) the frame on a clock reset to 2000, its object's
    label right and an hour old: the object's own time (it was moved 27 years
    ahead, the fire never raised); (b) the frame right, the object's label on a
    panel clock reset to 2000: the frame's time, saying so (it was dated 2000,
    hidden from every `since` filter)."""
    hour_ago = datetime(2026, 3, 14, 8, 26, 53)
    reset = datetime(2000, 1, 1, 3, 0, 7)
    obj = component_status(1, 1, 42, 0x105, 0x0003, "3F", hour_ago)
    [(_, fire)] = _translate(adu(2, obj), {"UITD-7_1_1_261": 1}, when=reset)
    assert fire["ts"] == T_MS - 3_600_000
    obj = component_status(1, 1, 42, 0x105, 0x0003, "3F", reset)
    [(_, fire)] = _translate(adu(2, obj), {"UITD-7_1_1_261": 1})
    assert fire["ts"] == T_MS
    assert "time label 2000-01-01T03:00:07+08:00 is not on its frame's clock" in str(fire["detail"])


def test_a_frame_without_a_time_keeps_only_labels_on_the_centres_clock() -> None:
    """A frame whose own time label is not a date: an object's label an hour
    old is its time; one of a clock reset to 2000 is the arrival time, saying
    so (it was taken as it was: a fire dated 2000, hidden from every `since`)."""
    import dataclasses

    def fire_at(label: datetime) -> dict[str, object]:
        obj = component_status(1, 1, 42, 0x105, 0x0003, "3F", label)
        f = frames(c.FrameReader().feed(frame(1, adu(2, obj))))[0]
        f = dataclasses.replace(f, time_label=bytes(6))
        tr = Translator("gw").translate(
            f, c.decode_adu(f.adu), UITD, {"UITD-7_1_1_261": 1}, T_MS + 800
        )
        [fire] = [orjson.loads(m.payload) for m in tr.messages]
        return dict(fire)

    assert fire_at(datetime(2026, 3, 14, 8, 26, 53))["ts"] == T_MS - 3_600_000
    reset = fire_at(datetime(2000, 1, 1, 12, 0, 7))
    assert reset["ts"] == T_MS + 800
    assert "2000-01-01T12:00:07+08:00" in str(reset["detail"])


def test_a_backlog_keeps_its_time_labels() -> None:
    """Objects an hour old in a frame sent now (the link was down): their own
    times, nothing moved; a clock 9 minutes off is still trusted."""
    hour_ago = datetime(2026, 3, 14, 8, 26, 53)
    obj = component_status(1, 1, 42, 0x105, 0x0003, "3F东走廊", hour_ago)
    [(_, fire)] = _translate(adu(2, obj), {"UITD-7_1_1_261": 1})
    assert fire["ts"] == T_MS - 3_600_000
    assert "uitd clock" not in str(fire["detail"])
    [(_, fire)] = _translate(adu(2, obj), {"UITD-7_1_1_261": 1}, arrival_ms=T_MS + 540_000)
    assert fire["ts"] == T_MS - 3_600_000
