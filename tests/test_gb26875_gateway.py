"""The GB/T 26875.3 gateway over real TCP with the broker and the registry
stood in for (no broker, no API, no database: fast): what it publishes for a
frame and how it answers it.

The outside check's findings: a heartbeat published `online` twice, and a
call point's fire in an object cut short was confirmed to the panel while
no alarm was raised and the reject did not mention it."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import orjson

from api.errors import localize
from gateways.gb26875 import codec as c
from gateways.gb26875.mapping import Component, Uitd, clipped
from gateways.gb26875.server import Gateway
from tests.gb26875_frames import (
    adu,
    component_status,
    frame,
    system_status,
    uitd_status,
)
from tests.helpers import reads_in_chinese

SOURCE = bytes([0xA7, 0x01, 0, 0, 0, 0])  # address 0000000001A7
UITD = Uitd(id="U7", site="S1", building="B1", floor="1", zone="Z")
NOW = datetime(2026, 3, 14, 9, 26, 53)  # the frames' time (UTC+8)


class FakePublisher:
    """Acknowledges every message at once and keeps it."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bool]] = []

    def publish_nowait(
        self, messages: Sequence[tuple[str, bytes, bool]], ack_timeout_s: float = 0
    ) -> asyncio.Future[bool]:
        self.sent.extend(messages)
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        future.set_result(True)
        return future

    async def publish_all(self, messages: Sequence[tuple[str, bytes, bool]]) -> bool:
        return await self.publish_nowait(messages)

    def events(self) -> list[tuple[str, dict[str, Any]]]:
        """(device, payload) of every event published."""
        return [
            (topic.split("/")[3], orjson.loads(payload))
            for topic, payload, _ in self.sent
            if topic.endswith("/event")
        ]

    def rejects(self) -> list[dict[str, Any]]:
        return [orjson.loads(p) for t, p, _ in self.sent if t.endswith("/reject")]

    def statuses(self) -> list[bytes]:
        return [p for t, p, _ in self.sent if t.endswith("/status")]


class FakeDirectory:
    """One registered uitd (UITD, at SOURCE); every point already registered."""

    def __init__(self, registered: bool = True, points: bool = True) -> None:
        self.known = registered
        self.points = points

    def cached(self, address: str) -> Uitd | None:
        return UITD if self.known and address == c.address_hex(SOURCE) else None

    async def lookup(self, address: str) -> Uitd | None:
        return self.cached(address)

    def registered(self, components: Sequence[Component]) -> bool:
        return self.points

    async def known_ids(self, site: str, prefix: str) -> set[str]:
        return set()

    async def ensure(self, components: Sequence[Component]) -> None:
        return None


def exchange(
    *frames: bytes, registered: bool = True, max_points: int = 100
) -> tuple[list[tuple[int, int]], FakePublisher]:
    """Send the frames on one connection, one after the other: the answers
    ((serial, command) each) and what the gateway published."""
    publisher = FakePublisher()

    async def main() -> list[tuple[int, int]]:
        directory = FakeDirectory(registered, points=max_points > 0)
        gateway = Gateway(publisher, directory, idle_s=30, max_points=max_points)  # type: ignore[arg-type]
        stop = asyncio.Event()
        ready: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        server = asyncio.create_task(
            gateway.serve("127.0.0.1", 0, stop, lambda host, port: ready.set_result(port))
        )
        port = await asyncio.wait_for(ready, 5)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        answers = []
        for raw in frames:
            writer.write(raw)
            answer = await asyncio.wait_for(reader.readexactly(30), 5)
            answers.append((answer[2] | answer[3] << 8, answer[26]))
        writer.close()
        stop.set()
        await server
        return answers

    return asyncio.run(main()), publisher


def test_a_heartbeat_publishes_online_once() -> None:
    """The first frame of a connection announces the uitd `online`; a heartbeat
    is that announcement itself, not a second one (the check saw two)."""
    answers, published = exchange(
        frame(1, b"", source=SOURCE, when=NOW), frame(2, b"", source=SOURCE, when=NOW)
    )
    assert answers == [(1, c.CMD_CONFIRM), (2, c.CMD_CONFIRM)]
    # One per heartbeat (the second keeps the retained status fresh), never two for one.
    assert published.statuses() == [b"online", b"online"]
    # A data frame first announces the uitd as well, once.
    _, published = exchange(
        frame(3, adu(21, uitd_status(0x01, NOW)), source=SOURCE, when=NOW),
        frame(4, b"", source=SOURCE, when=NOW),
    )
    assert published.statuses() == [b"online", b"online"]


def test_a_fire_in_an_object_cut_short_is_raised_and_the_reject_says_so() -> None:
    """The outside check's serial 62: type 2, one object, only the first 20 bytes
    of a call point in fire alarm. It was confirmed, no alarm raised, and the
    reject read `the 0 complete object(s) in it were taken`. The fire is taken
    from the object's head (the frame's time: its own label is missing), the
    frame confirmed (resending the same bytes cannot help, and a device that
    resends until confirmed would hold every later alarm behind it), and the
    reject says first what it carried."""
    cut = component_status(1, 3, 23, 0x601, 0x0003, "短", NOW)[:20]
    sent = frame(62, bytes([2, 1]) + cut, source=SOURCE, when=NOW)
    answers, published = exchange(sent)
    assert answers == [(62, c.CMD_CONFIRM)]
    fires = [(d, p) for d, p in published.events() if p["type"] == "activated"]
    assert [d for d, _ in fires] == ["U7_1_3_1537"]
    assert "object cut short (no time label): the frame's time taken" in fires[0][1]["detail"]
    [reject] = published.rejects()
    assert reject["reason"] == "bad_payload"
    assert reject["detail"].startswith(
        "it carries FIRE ALARMS: point 1/3/1537 (短), raised; type 2 with 1 object(s) of 46 "
        "bytes needs 48 bytes, got 22; the 0 complete object(s) in it were taken, and object "
        "1, cut short after 20 of its 46 bytes, from its head (no time label: the frame's "
        "time) (serial 62"
    )
    assert base64.b64decode(reject["raw"]) == frame(
        62, bytes([2, 1]) + cut, source=SOURCE, when=NOW
    )
    reads_in_chinese(reject["detail"])  # operators read Chinese


def test_alarm_states_of_every_type_cut_short_are_raised_and_named() -> None:
    """System status (type 1), the transmission device's status (21) and an
    operation record's manual alarm (4) cut short: raised, and named in the
    reject; one cut before its status is said to possibly hide a fire."""
    answers, published = exchange(
        frame(1, bytes([1, 1]) + system_status(1, 2, 0x0107, NOW)[:5], source=SOURCE, when=NOW),
        frame(2, bytes([21, 1]) + uitd_status(0x07, NOW)[:3], source=SOURCE, when=NOW),
        frame(3, bytes([4, 1, 1, 2, 0x04, 9]), source=SOURCE, when=NOW),
        frame(4, bytes([2, 1]) + component_status(1, 1, 42, 9, 3, "x", NOW)[:7], source=SOURCE),
    )
    assert [command for _, command in answers] == [c.CMD_CONFIRM] * 4
    events = {(d, p["type"]) for d, p in published.events()}
    assert {("U7_1_2", "panel_fire"), ("U7_1_2", "fault")} <= events
    assert {("U7", "panel_fire"), ("U7", "fault"), ("U7_1_2", "operation")} <= events
    details = [r["detail"] for r in published.rejects()]
    assert details[0].startswith(
        "it carries FIRE ALARMS: system 1/2; FAULTS: system 1/2, raised; type 1 "
    )
    assert details[1].startswith(
        "it carries FIRE ALARMS: the transmission device; FAULTS: the transmission device, "
        "raised; type 21 "
    )
    assert details[2].startswith(
        "it carries MANUAL ALARMS: system 1/2 by operator 9, raised; type 4 "
    )
    assert (
        "object 1, cut short after 7 of its 46 bytes, before it says what it reports: it "
        "MAY CARRY A FIRE ALARM OR A FAULT, check the panel (serial 4"
    ) in details[3]
    for detail in details:
        reads_in_chinese(detail)


def test_an_unknown_devices_reject_names_a_fire_cut_short() -> None:
    cut = component_status(1, 3, 23, 0x601, 0x0003, "短", NOW)[:20]
    answers, published = exchange(
        frame(62, bytes([2, 1]) + cut, source=SOURCE, when=NOW), registered=False
    )
    assert answers == [(62, c.CMD_CONFIRM)]
    [reject] = published.rejects()
    assert reject["reason"] == "unknown_device"
    assert "; it carries FIRE ALARMS: point 1/3/1537 (短) (serial 62" in reject["detail"]
    reads_in_chinese(reject["detail"])


def test_a_fire_of_points_refused_is_named_not_raised() -> None:
    """Points beyond a transmission device's limit are not registered, so their
    alarms cannot be raised: the reject says so first."""
    fire = component_status(1, 1, 42, 0x105, 0x0003, "3F", NOW)
    answers, published = exchange(frame(5, adu(2, fire), source=SOURCE, when=NOW), max_points=0)
    assert answers == [(5, c.CMD_CONFIRM)]
    assert published.events() == []
    [reject] = published.rejects()
    assert reject["detail"].startswith(
        "it carries FIRE ALARMS: point 1/1/261 (3F), NOT RAISED; transmission device U7 has "
    )
    reads_in_chinese(reject["detail"])


def test_a_walk_test_is_a_panel_test_and_a_point_still_raised_after_it_a_real_alarm() -> None:
    """Status bit 0 clear is the panel's test mode (GB/T 26875.3: normal 1 /
    test 0): a detector and a call point in alarm under test are `panel_test`
    (the call point no longer `activated`, which would command the building's
    signs); raised under test and still raised once test mode ends, a real
    alarm; a point that goes into test while raised is not raised again."""

    def status(serial: int, address: int, ctype: int, flags: int) -> bytes:
        obj = component_status(1, 3, ctype, address, flags, "", NOW)
        return frame(serial, adu(2, obj), source=SOURCE, when=NOW)

    _, published = exchange(
        status(1, 0x10, 23, 0x0002),  # call point, fire, test
        status(2, 0x11, 42, 0x0002),  # smoke detector, fire, test
        status(3, 0x10, 23, 0x0001),  # the call point's test ends: normal
        status(4, 0x11, 42, 0x0003),  # the detector's test ends: still in fire
        status(5, 0x11, 42, 0x0002),  # back into test, still raised: nothing new
    )
    fire_events = [(d, p) for d, p in published.events() if p["type"] not in ("restore", "fault")]
    assert [(d, p["type"]) for d, p in fire_events] == [
        ("U7_1_3_16", "panel_test"),
        ("U7_1_3_17", "panel_test"),
        ("U7_1_3_16", "panel_reset"),  # (not the call point's `reset` of a real press)
        ("U7_1_3_17", "panel_fire"),
    ]
    assert "flags=0x0002 (test, fire)" in fire_events[0][1]["detail"]


def test_a_status_cut_after_its_first_status_byte_raises_the_fire_in_it() -> None:
    """The first of the two status bytes holds the fire bit: an object cut
    right after it (8 bytes of a component, 3 of a system) still raises its
    fire; the missing byte (power fault and above) is kept as last known, so
    a point with a power fault is not `restore`d by the bytes that did not come."""
    point = component_status(1, 1, 42, 9, 0x0101, "x", NOW)  # normal, power fault
    answers, published = exchange(
        frame(1, adu(2, point), source=SOURCE, when=NOW),
        frame(2, bytes([2, 1]) + component_status(1, 1, 42, 9, 3, "x", NOW)[:8], source=SOURCE),
        frame(3, bytes([1, 1]) + system_status(1, 2, 0x0003, NOW)[:3], source=SOURCE),
    )
    assert [command for _, command in answers] == [c.CMD_CONFIRM] * 3
    got = [(d, p["type"]) for d, p in published.events()]
    assert got == [
        ("U7_1_1_9", "panel_reset"),  # first sight: its whole state
        ("U7_1_1_9", "fault"),
        ("U7_1_1_9", "panel_fire"),  # cut after the fire bit: raised, no restore
        ("U7_1_2", "panel_fire"),
        ("U7_1_2", "restore"),
    ]
    fire = next(p for d, p in published.events() if p["type"] == "panel_fire")
    assert "flags=0x0103 (fire, power_fault)" in fire["detail"]
    details = [r["detail"] for r in published.rejects()]
    assert "its second status byte missing (power fault and the bits above it" in details[0]
    assert details[0].startswith("it carries FIRE ALARMS: point 1/1/9, raised;")


def test_a_point_description_can_neither_split_nor_forge_a_rejects_detail() -> None:
    """A recheck: descriptions with "; " left the Chinese detail half English
    (the detail's clauses are split there), and one like `), FAULTS: point
    1/1/1 (` forged an entry. Inside a detail a description's separators and
    brackets are full-width."""
    fire = component_status(1, 1, 42, 0x105, 0x0003, "手报; 二楼", NOW)
    forged = component_status(1, 1, 42, 0x106, 0x0003, "), FAULTS: point 9/9/9 (", NOW)
    # The same in the Chinese label's own separators (a second recheck).
    forged_zh = component_status(1, 1, 42, 0x107, 0x0003, "x)；故障：部件 9/9/9 (y", NOW)
    answers, published = exchange(
        frame(8, adu(2, fire + forged + forged_zh), source=SOURCE, when=NOW), registered=False
    )
    assert answers == [(8, c.CMD_CONFIRM)]
    [reject] = published.rejects()
    assert "FAULTS: " not in reject["detail"]  # (its words stay, as its text)
    assert "point 1/1/261 (手报· 二楼)" in reject["detail"]
    reads_in_chinese(reject["detail"])
    label = localize(reject["detail"], "zh-CN")
    assert label is not None
    assert "故障：" not in label
    assert label.split("（流水号")[0].count("；") == 1  # unregistered; what it carries


def test_a_reject_naming_many_points_reads_in_chinese_and_is_cut_after_a_whole_one() -> None:
    """More than six points in alarm: `and N more` stayed English in the
    Chinese label; long descriptions made the 500-character cut fall inside
    a point's name (naming another, valid-looking point) and lose where the
    frame came from."""
    many = b"".join(
        component_status(1, 1, 42, 0x200 + i, 0x0003, "三楼东侧走廊吊顶内感烟探测器" + str(i), NOW)
        for i in range(22)
    )
    answers, published = exchange(frame(9, adu(2, many), source=SOURCE, when=NOW), registered=False)
    assert answers == [(9, c.CMD_CONFIRM)]
    [reject] = published.rejects()
    detail = reject["detail"]
    assert "and 16 more" in detail
    reads_in_chinese(detail)
    eight = b"".join(component_status(1, 1, 42, 0x300 + i, 0x0003, "", NOW) for i in range(8))
    _, published = exchange(frame(10, adu(2, eight), source=SOURCE, when=NOW), registered=False)
    [reject] = published.rejects()
    assert "and 2 more" in reject["detail"]
    reads_in_chinese(reject["detail"])


def test_a_detail_over_500_characters_is_cut_after_an_entry_and_keeps_its_origin() -> None:
    names = ", ".join(f"point 1/1/{260 + i} (三楼东侧走廊吊顶内感烟探测器{i})" for i in range(20))
    unknown = "source address 0000000001A7 is not registered: register a device of kind uitd"
    detail = f"{unknown} with this address; it carries FIRE ALARMS: {names}"
    detail += " (serial 9, from 10.0.0.1:5000)"
    cut = clipped(detail)
    assert len(cut) <= 500
    assert cut.endswith(" … (serial 9, from 10.0.0.1:5000)")
    kept = cut.removesuffix(" … (serial 9, from 10.0.0.1:5000)")
    assert detail.startswith(kept)
    assert detail[len(kept) :].startswith(", point ")  # cut between two points
