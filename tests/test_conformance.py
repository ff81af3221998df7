"""The conformance check against real (simulated) devices on the real broker."""

from __future__ import annotations

import json
import secrets
import threading
import time

import pytest

from device_sim.conformance import Checker, RuleResult, listen, render
from device_sim.defects import DEFECTS, TestDevice
from firesafe.settings import MqttEndpoint

INTERVAL_S = 0.4  # fast devices: enough samples in a few seconds, 0.1 s of jitter allowed
LISTEN_S = 4.0

# MQTT 5 subscription options and last wills over real sessions.
pytestmark = pytest.mark.usefixtures("full_broker")


@pytest.fixture(scope="module")
def reports(mqtt_url: str) -> dict[str, dict[str, RuleResult]]:
    """One good device and one broken device per rule, all judged at once."""
    endpoint = MqttEndpoint.parse(mqtt_url)
    tag = secrets.token_hex(3)
    cases = ["good", *DEFECTS]
    checkers = {case: Checker(f"cf{tag}-{case}".replace("_", "-"), interval_s=INTERVAL_S)
                for case in cases}  # fmt: skip
    ready = {case: threading.Event() for case in cases}
    listeners = [
        threading.Thread(
            target=listen,
            args=(endpoint, checkers[case], LISTEN_S + 1.0),
            kwargs={"ready": ready[case]},
        )
        for case in cases
    ]
    for t in listeners:
        t.start()
    for ev in ready.values():
        assert ev.wait(10)
    devices = [
        TestDevice(
            endpoint,
            checkers[case].site,
            f"dev-{tag}-{i}",
            INTERVAL_S,
            "" if case == "good" else case,
        )
        for i, case in enumerate(cases)
    ]
    for d in devices:
        d.start()
    time.sleep(LISTEN_S)
    for d in devices:
        d.stop()
    for t in listeners:
        t.join()
    out: dict[str, dict[str, RuleResult]] = {}
    for case, chk in checkers.items():
        results = chk.report()
        print(case, "\n", render(results, chk.observed))
        out[case] = {r.rule: r for r in results}
    return out


def test_good_device_passes_every_rule(reports: dict[str, dict[str, RuleResult]]) -> None:
    good = reports["good"]
    failed = {name: r.examples for name, r in good.items() if r.status == "fail"}
    assert failed == {}
    for rule in ("topic_shape", "payload_schema", "finite_numbers", "ts_sanity", "seq",
                 "interval", "status_retained"):  # fmt: skip
        assert good[rule].status == "pass", rule


@pytest.mark.parametrize("defect", list(DEFECTS))
def test_each_broken_device_fails_its_rule(
    reports: dict[str, dict[str, RuleResult]], defect: str
) -> None:
    rule = DEFECTS[defect]
    result = reports[defect][rule]
    assert result.status == "fail", (defect, result)
    assert result.examples
    failed = {name for name, r in reports[defect].items() if r.status == "fail"}
    assert failed == {rule}  # the one defect, no collateral verdicts


def test_checker_flags_seconds_and_reordering_offline() -> None:
    chk = Checker("S1", interval_s=10)
    now = int(time.time() * 1000)
    chk.feed("fs/v1/S1/D1/status", b"online", True, now)
    chk.feed("fs/v1/S1/D1/telemetry", b'{"ts": %d, "seq": 5, "v": {}}' % (now // 1000), False, now)
    chk.feed("fs/v1/S1/D1/telemetry", b'{"ts": %d, "seq": 4, "v": {}}' % (now + 5), False, now)
    chk.feed("fs/v1/S1/D1/telemetry", b"x" * 70_000, False, now)
    chk.feed("fs/v2/S1/D1/telemetry", b"{}", False, now)
    res = {r.rule: r for r in chk.report()}
    assert res["ts_sanity"].status == "fail"
    assert "seconds" in res["ts_sanity"].examples[0]
    assert res["payload_schema"].status == "fail"
    assert res["topic_shape"].status == "fail"
    assert res["status_retained"].status == "pass"


def test_a_repeated_problem_is_one_example_and_the_report_is_stable() -> None:
    chk = Checker("S1", interval_s=1.0)
    now = int(time.time() * 1000)
    for n in range(20):  # the same malformed payload, over and over
        chk.feed("fs/v1/S1/D1/telemetry", b"{not json", False, now + n)
    first = {r.rule: r for r in chk.report()}
    again = {r.rule: r for r in chk.report()}
    assert first == again  # judging twice does not count twice
    schema = first["payload_schema"]
    assert schema.failed == 20
    assert len(schema.examples) == len(set(schema.examples)) == 1


def test_no_traffic_is_said_plainly() -> None:
    chk = Checker("S1")
    text = render(chk.report(), chk.observed)
    assert text.startswith("no traffic seen")
    assert "FAIL:" not in text
    assert "rules failed" not in text


def test_the_sites_topics_in_another_case_are_named() -> None:
    """MQTT topics are case-sensitive: a device publishing under FS/v1 or a
    lower-case site reaches nobody, and the check says why."""
    chk = Checker("SZ1", interval_s=10)
    now = int(time.time() * 1000)
    chk.feed("fs/v1/SZ1/D1/status", b"online", True, now)
    for topic in ("FS/v1/SZ1/D1/telemetry", "fs/v1/sz1/D1/telemetry"):
        chk.feed(topic, b'{"ts": %d, "seq": 1, "v": {}}' % now, False, now)
    res = {r.rule: r for r in chk.report()}
    assert res["topic_shape"].failed == 2
    assert "case-sensitive" in res["topic_shape"].examples[0]
    # Only its status arrived: said, not failed (a call point may send nothing else).
    assert res["interval"].status == "skip"
    assert "only a status seen from D1" in res["interval"].note


def test_qos_0_is_fine_for_telemetry_only() -> None:
    chk = Checker("S1", interval_s=10)
    now = int(time.time() * 1000)
    chk.feed("fs/v1/S1/D1/telemetry", b'{"ts": %d, "seq": 1, "v": {}}' % now, False, now, qos=0)
    chk.feed("fs/v1/S1/D1/event", b'{"ts": %d, "seq": 2, "type": "fault"}' % now, False, now, qos=0)
    qos = {r.rule: r for r in chk.report()}["qos"]
    assert (qos.checked, qos.failed) == (1, 1)
    assert "/event" in qos.examples[0]


def test_a_clock_in_seconds_is_one_finding() -> None:
    chk = Checker("S1", interval_s=10)
    now = int(time.time() * 1000)
    for n in range(4):
        ts = (now + n * 10_000) // 1000
        chk.feed("fs/v1/S1/D1/telemetry", b'{"ts": %d, "seq": %d, "v": {}}' % (ts, n), False, now)
    res = {r.rule: r for r in chk.report()}
    assert res["ts_sanity"].status == "fail"
    assert res["interval"].status == "skip"  # not also "reports every 0.01 s"


@pytest.mark.parametrize(
    ("v", "named"),
    [
        ({"Obscuration": 0.1, "temp": 22, "CO": 2}, "Obscuration (obscuration?)"),
        ({"temp": 22, "smoke": 0.1}, "temp, smoke"),
    ],
)
def test_reading_names_detection_does_not_know_fail_the_schema(
    v: dict[str, float], named: str
) -> None:
    """An outside check's detector sent Obscuration/temp/CO: stored, never
    judged, and the check passed it. Names in another case, or readings none
    of which detection knows, fail now; a known reading beside an extra does not."""
    chk = Checker("S1", interval_s=10)
    now = int(time.time() * 1000)
    body = json.dumps({"ts": now, "seq": 1, "v": v}).encode()
    chk.feed("fs/v1/S1/D1/telemetry", body, False, now)
    extra = json.dumps({"ts": now + 1, "seq": 2, "v": {"obscuration": 0.1, "fw": 3}}).encode()
    chk.feed("fs/v1/S1/D2/telemetry", extra, False, now)
    schema = {r.rule: r for r in chk.report()}["payload_schema"]
    assert (schema.checked, schema.failed) == (2, 1)
    assert named in schema.examples[0]


def test_a_key_given_twice_fails_the_schema() -> None:
    """Ingest rejects it (JSON keeps one of the two): the check says so first."""
    chk = Checker("S1", interval_s=10)
    now = int(time.time() * 1000)
    twice = b'{"ts": %d, "seq": 1, "v": {"obscuration": 0.2, "obscuration": 99}}' % now
    chk.feed("fs/v1/S1/D1/telemetry", twice, False, now)
    schema = {r.rule: r for r in chk.report()}["payload_schema"]
    assert schema.failed == 1
    assert "'obscuration' given twice" in schema.examples[0]
