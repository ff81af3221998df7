"""Languages: the catalogue is complete, negotiation picks the right language,
the API answers errors and labels in the caller's language, sites carry a
time zone and a standard."""

from __future__ import annotations

import ast
import os
import re
import string
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from babel.messages.pofile import read_po

from api.errors import localize
from detection.params import THRESHOLD_NAMES
from device_sim.conformance import RULES, Checker, render
from firesafe import i18n
from tests.test_api_support import (
    client,
    device,
    insert_alarm,
    live_server,
    make_token,
    register,
)

ROOT = Path(__file__).resolve().parents[1]
LOCALE = ROOT / "firesafe" / "locale"
CJK = re.compile(r"[\u4e00-\u9fff]")


def _catalog(directory: str):  # type: ignore[no-untyped-def]
    with (LOCALE / directory / "LC_MESSAGES" / "messages.po").open("rb") as f:
        return read_po(f, locale=directory)


def _fields(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


# --- the catalogue -----------------------------------------------------------------


def test_every_msgid_has_a_chinese_translation() -> None:
    template = i18n.extract(ROOT)
    zh = _catalog("zh_CN")
    en = _catalog("en")
    missing, fuzzy = [], []
    for message in template:
        if not message.id:
            continue
        key = (message.id, message.context)
        found = zh.get(*key)
        if found is None or not found.string:
            missing.append(key)
        elif found.fuzzy:
            fuzzy.append(key)
        if message.context:
            label = en.get(*key)
            assert label is not None, f"no English label for {key}"
            assert label.string, f"no English label for {key}"
    assert not missing, f"untranslated (run `make messages`): {missing}"
    assert not fuzzy, f"fuzzy translations are not shown: {fuzzy}"


def test_translations_keep_their_placeholders() -> None:
    for message in _catalog("zh_CN"):
        if message.id and message.string:
            assert _fields(message.string) == _fields(message.id), message.id


def test_catalogue_is_up_to_date_with_the_sources() -> None:
    """Nothing obsolete: every entry of the .po is still asked for by the code."""
    wanted = {(m.id, m.context) for m in i18n.extract(ROOT) if m.id}
    for directory in ("en", "zh_CN"):
        have = {(m.id, m.context) for m in _catalog(directory) if m.id}
        assert have <= wanted, f"{directory}: obsolete entries {sorted(have - wanted, key=str)}"


def test_thresholds_vocabulary_matches_the_engine() -> None:
    assert tuple(sorted(i18n.THRESHOLDS)) == THRESHOLD_NAMES


def test_labels_of_every_vocabulary() -> None:
    zh = i18n.labels("zh-CN")
    en = i18n.labels("en")
    assert set(zh) == set(en) == set(i18n.VOCABULARIES)
    for vocabulary, codes in i18n.VOCABULARIES.items():
        assert list(zh[vocabulary]) == list(codes)
        for code in codes:
            assert CJK.search(zh[vocabulary][code]), (vocabulary, code, zh[vocabulary][code])
            assert en[vocabulary][code] != code or code.isupper(), (vocabulary, code)
    assert zh["alarm_type"]["fire"] == "火警"
    assert en["verdict"]["suppressed"] == "Judged false"
    # A code the catalogue does not know is shown as itself, never hidden.
    assert i18n.label("reason", "something_new", "zh-CN") == "something_new"


# --- choosing the language --------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, "en"),
        ("", "en"),
        ("zh-CN", "zh-CN"),
        ("zh", "zh-CN"),
        ("zh-Hans-CN,zh;q=0.9,en;q=0.8", "zh-CN"),
        ("en-US,en;q=0.9,zh-CN;q=0.8", "en"),
        ("fr-FR,zh-CN;q=0.5,en;q=0.4", "zh-CN"),
        ("zh-TW,en;q=0.5", "en"),
        ("de, fr", "en"),
        ("zh-CN;q=0, en", "en"),
        ("*", "en"),
        ("zh-CN;q=abc, en;q=0.1", "en"),
    ],
)
def test_accept_language(header: str | None, expected: str) -> None:
    assert i18n.negotiate_accept_language(header) == expected


@pytest.mark.parametrize(
    ("env", "flag", "expected"),
    [
        ({}, None, "en"),
        ({"LANG": "zh_CN.UTF-8"}, None, "zh-CN"),
        ({"LANG": "en_US.UTF-8", "LC_ALL": "zh_CN.UTF-8"}, None, "zh-CN"),
        ({"LC_ALL": "C", "LANG": "zh_CN.UTF-8"}, None, "en"),  # LC_ALL wins, even as C
        ({"LC_MESSAGES": "zh_CN.utf8"}, None, "zh-CN"),
        ({"LANG": "zh_CN.UTF-8"}, "en", "en"),
        ({}, "zh-CN", "zh-CN"),
        ({}, "zh_CN", "zh-CN"),
    ],
)
def test_cli_language(env: dict[str, str], flag: str | None, expected: str) -> None:
    assert i18n.from_environment(env, flag) == expected


def test_cli_language_rejects_an_unknown_flag() -> None:
    with pytest.raises(ValueError, match="unsupported language 'fr'"):
        i18n.from_environment({}, "fr")


# --- API error texts --------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("site 'S9' not found", "未找到站点 'S9'"),
        (
            "query parameter 'since': 'x' is neither ISO 8601 nor epoch milliseconds",
            "查询参数 'since'：'x' 既不是 ISO 8601 时间，也不是纪元毫秒数",
        ),
        ("CSV line 3: body kind: Field required", "CSV 第 3 行：请求体 kind：缺少必填项"),
        (
            "body 0.kind: Input should be 'smoke', 'heat' or 'evac' (and 2 more)",
            "请求体 0.kind：应为以下取值之一：'smoke'、'heat' 或 'evac'（另有 2 处错误）",
        ),
        (
            "CSV line 2: interval_s: Input should be greater than 0",
            "CSV 第 2 行：interval_s：应大于 0",
        ),
        ("unknown or revoked token", "令牌未知或已被吊销"),
        ("alarm 'A1' is already confirmed", "报警 'A1' 的结论已是“已确认”"),  # a code: its label
        (
            "the manager role may not do this (needs admin)",
            "角色 manager 无权执行此操作（需要 admin）",
        ),
        # (an outside check: the "or" between roles stayed English)
        (
            "the manager role may not do this (needs admin or operator)",
            "角色 manager 无权执行此操作（需要 admin 或 operator）",
        ),
        (
            "the operator role may not do this (needs admin, operator or manager)",
            "角色 operator 无权执行此操作（需要 admin、operator 或 manager）",
        ),
        # A fire panel's reject, clause by clause (it stayed English: operators
        # read Chinese, and it may be what says a fire was not raised).
        (
            "source address 0000000001A7 is not registered: register a device of kind uitd "
            "with this address; it carries FIRE ALARMS: point 1/1/1 (x), system 1/1; FAULTS: "
            "point 1/1/7 (serial 9, from 127.0.0.1:5555)",
            "源地址 0000000001A7 未注册：请用此地址注册一台类型为 uitd 的设备；其中含有火警：部件 "
            "1/1/1 (x)、系统 1/1；故障：部件 1/1/7（流水号 9，来自 127.0.0.1:5555）",
        ),
        # "; " inside a value the caller gave is no clause separator.
        (
            "query parameter 'since': 'a; b' is neither ISO 8601 nor epoch milliseconds",
            "查询参数 'since'：'a; b' 既不是 ISO 8601 时间，也不是纪元毫秒数",
        ),
    ],
)
def test_error_messages_are_translated(message: str, expected: str | None) -> None:
    text = localize(message, "zh-CN")
    assert text is not None
    if expected is not None:
        assert text == expected
    assert CJK.search(text)
    assert localize(message, "en") == message


# --- against the API --------------------------------------------------------------

ZH = {"Accept-Language": "zh-CN,zh;q=0.9"}


@pytest.fixture(scope="module")
def api_url(database_url: str, migration: object) -> Iterator[str]:
    with live_server(database_url) as url:
        yield url


@pytest.fixture
def api(api_url: str, db: str) -> Iterator[object]:
    with client(api_url) as c:
        yield c


def test_labels_endpoint(api) -> None:  # type: ignore[no-untyped-def]
    zh = api.get("/api/v1/labels", params={"lang": "zh-CN"})
    assert zh.status_code == 200, zh.text
    body = zh.json()
    assert body["lang"] == "zh-CN"
    assert body["languages"] == ["en", "zh-CN"]
    assert body["labels"]["alarm_type"]["fire"] == "火警"
    assert body["labels"]["verdict"]["suppressed"] == "判定为误报"
    # Without ?lang, Accept-Language decides; without either, English.
    assert api.get("/api/v1/labels", headers=ZH).json()["lang"] == "zh-CN"
    assert api.get("/api/v1/labels").json()["labels"]["alarm_type"]["fire"] == "Fire"
    bad = api.get("/api/v1/labels", params={"lang": "fr"}, headers=ZH)
    assert bad.status_code == 422
    assert bad.json()["error"]["code"] == "invalid_parameter"
    assert "'lang'" in bad.json()["error"]["message"]
    assert CJK.search(bad.json()["error"]["message"])


def test_errors_follow_accept_language(api) -> None:  # type: ignore[no-untyped-def]
    missing = api.get("/api/v1/alarms/nope", headers=ZH)
    assert missing.status_code == 404
    error = missing.json()["error"]
    assert (error["code"], error["message"]) == ("not_found", "未找到报警 'nope'")
    assert missing.headers["content-language"] == "zh-CN"
    assert "accept-language" in missing.headers["vary"].lower()
    english = api.get("/api/v1/alarms/nope")
    assert english.json()["error"]["message"] == "alarm 'nope' not found"

    bad = api.get("/api/v1/alarms", params={"limit": "many"}, headers=ZH)
    assert bad.status_code == 422
    error = bad.json()["error"]
    assert error["code"] == "invalid_parameter"
    assert error["message"] == "查询参数 'limit'：应为整数"

    body = api.post("/api/v1/devices", json={"id": "D1"}, headers=ZH)
    assert body.status_code == 422
    assert body.json()["error"]["code"] == "invalid_body"
    message = body.json()["error"]["message"]
    assert "缺少必填项" in message
    assert "Field required" not in message

    # A validator's own sentence is translated, or kept in English after the
    # generic words, never lost; and never with pydantic's "Value error, ".
    token = {"role": "manager", "name": "x"}
    zh = api.post("/api/v1/tokens", json=token, headers=ZH).json()["error"]["message"]
    assert zh == "请求体：manager 令牌至少需要一个站点"
    en = api.post("/api/v1/tokens", json=token).json()["error"]["message"]
    assert en == "body: a manager token needs at least one site"
    odd: dict[str, object] = {"id": "D1", "site": "S1", "building": "B", "floor": "1"}
    odd |= {"zone": "Z", "kind": "smoke", "thresholds": {"obscuration_alarm": 1e308}}
    zh = api.post("/api/v1/devices", json=odd, headers=ZH).json()["error"]["message"]
    assert zh.startswith("请求体：thresholds.obscuration_alarm：须在 0.5-20 范围内")
    assert "Value error" not in zh

    with client(api.base_url, token="wrong") as anonymous:
        denied = anonymous.get("/api/v1/alarms", headers=ZH)
    assert denied.status_code == 401
    assert denied.json()["error"]["message"] == "令牌未知、已吊销或已过期"


def test_role_refusals_say_or_in_the_callers_language(api, api_url: str) -> None:  # type: ignore[no-untyped-def]
    """An outside check: "needs admin or operator" kept its "or" in Chinese."""
    manager = make_token(api_url, "manager", ["S1"], name="mgr-or")
    operator = make_token(api_url, "operator", name="op-or")
    with client(api_url, token=manager) as c:
        zh = c.post("/api/v1/alarms/NOPE/dismiss", json={}, headers=ZH)
        en = c.post("/api/v1/alarms/NOPE/dismiss", json={})
    assert zh.status_code == en.status_code == 403
    assert zh.json()["error"]["message"] == "角色 manager 无权执行此操作（需要 admin 或 operator）"
    assert en.json()["error"]["message"] == (
        "the manager role may not do this (needs admin or operator)"
    )
    with client(api_url, token=operator) as c:
        zh = c.get("/api/v1/notifications/targets", headers=ZH)
    assert zh.status_code == 403
    assert zh.json()["error"]["message"] == "角色 operator 无权执行此操作（需要 admin 或 manager）"


def test_alarm_labels_in_the_callers_language(api, db: str) -> None:  # type: ignore[no-untyped-def]
    register(api, device("S1-SD1"))
    with psycopg.connect(db) as conn:
        insert_alarm(conn, id="A1", device="S1-SD1", verdict="suppressed", status="cleared")
    (zh,) = api.get("/api/v1/alarms", headers=ZH).json()["items"]
    # Codes unchanged, labels added.
    assert (zh["type"], zh["verdict"], zh["status"], zh["reason"]) == (
        "fire",
        "suppressed",
        "cleared",
        "coincidence",
    )
    assert zh["type_label"] == "火警"
    ok = api.get("/api/v1/alarms", headers=ZH)
    assert ok.headers["content-language"] == "zh-CN"
    assert api.get("/api/v1/alarms").headers["content-language"] == "en"
    assert zh["verdict_label"] == "判定为误报"
    assert zh["status_label"] == "已复位"
    assert zh["reason_label"] == "同一区域两只探测器报警"
    (en,) = api.get("/api/v1/alarms").json()["items"]
    assert en["type_label"] == "Fire"
    assert en["verdict_label"] == "Judged false"
    detail = api.get("/api/v1/alarms/A1", headers=ZH).json()
    assert detail["verdict_label"] == "判定为误报"
    # The system's log notes are codes; a person reads their labels.
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO alarm_log (alarm_id, action, actor, note) VALUES "
            "('A1', 'suppressed', 'system', 'suppressed: coincidence'), "
            "('A1', 'acknowledged', 'ann', 'pending: seen')"
        )
    log = api.get("/api/v1/alarms/A1", headers=ZH).json()["log"]
    notes = [(e["note"], e["note_label"]) for e in log if e["note"]]
    assert notes == [
        ("suppressed: coincidence", "判定为误报：同一区域两只探测器报警"),
        ("pending: seen", "pending: seen"),  # a person's note, as written
    ]
    log = api.get("/api/v1/alarms/A1").json()["log"]
    assert log[-2]["note_label"] == "Judged false: Two detectors in the zone"
    devices = api.get("/api/v1/devices", headers=ZH).json()["items"]
    assert devices[0]["kind_label"] == "感烟火灾探测器"


def test_site_time_zone_and_standard(api) -> None:  # type: ignore[no-untyped-def]
    register(api, device("S1-SD1"))
    summary = api.get("/api/v1/sites/S1/summary").json()
    assert (summary["timezone"], summary["standard"]) == ("UTC", "EN")

    put = api.put("/api/v1/sites/S1", json={"timezone": "Asia/Shanghai", "standard": "GB"})
    assert put.status_code == 200, put.text
    assert (put.json()["timezone"], put.json()["standard"]) == ("Asia/Shanghai", "GB")
    # A field left out keeps its value; a new site gets the defaults.
    again = api.put("/api/v1/sites/S1", json={"name": "上海一号楼"})
    assert again.json()["timezone"] == "Asia/Shanghai"
    assert again.json()["name"] == "上海一号楼"
    created = api.put("/api/v1/sites/S2", json={"timezone": "Europe/Berlin"})
    assert created.status_code == 200, created.text
    assert (created.json()["timezone"], created.json()["standard"]) == ("Europe/Berlin", "EN")
    listed = {s["site"]: s["timezone"] for s in api.get("/api/v1/sites").json()["items"]}
    assert listed == {"S1": "Asia/Shanghai", "S2": "Europe/Berlin"}

    bad = api.put("/api/v1/sites/S1", json={"timezone": "Mars/Olympus"}, headers=ZH)
    assert bad.status_code == 422
    assert bad.json()["error"]["code"] == "invalid_body"
    assert CJK.search(bad.json()["error"]["message"])
    assert api.put("/api/v1/sites/S1", json={"standard": "ISO"}).status_code == 422
    assert api.get("/api/v1/sites/S1/summary").json()["timezone"] == "Asia/Shanghai"


def test_only_an_admin_sets_a_site(api_url: str, db: str) -> None:
    from tests.test_api_support import make_token

    with client(api_url) as admin:
        register(admin, device("S1-SD1"))
    token = make_token(api_url, "operator")
    with client(api_url, token=token) as operator:
        response = operator.put("/api/v1/sites/S1", json={"timezone": "Asia/Shanghai"})
    assert response.status_code == 403


# --- CLI and conformance ------------------------------------------------------------


def _broken_traffic() -> Checker:
    chk = Checker("S1", interval_s=10)
    now = 1_764_072_000_000
    chk.feed("fs/v1/S1/D1/status", b"online", False, now)
    chk.feed("fs/v1/S1/D1/telemetry", b'{"ts": %d, "seq": 5, "v": {}}' % (now // 1000), False, now)
    chk.feed("fs/v1/S1/D1/telemetry", b'{"ts": %d, "seq": 4, "v": {}}' % (now + 5), False, now)
    chk.feed("fs/v2/S1/D1/telemetry", b"{}", False, now)
    return chk


def test_conformance_report_in_both_languages() -> None:
    chk = _broken_traffic()
    english = render(chk.report(), chk.observed)
    chinese = render(chk.report("zh-CN"), chk.observed, "zh-CN")
    assert "FAIL  topic_shape" in english
    assert "fs/v2/S1/D1/telemetry: not a contract topic" in english
    assert "looks like seconds, not epoch milliseconds" in english
    assert english.endswith("FAIL: 4 of 10 rules failed, 4 messages")
    # Judging again gives the same counts (report is idempotent).
    assert render(chk.report(), chk.observed) == english
    assert "失败  topic_shape            4 项已检查，其中 1 项不合格  [主题格式]" in chinese
    assert "[主题格式]" in chinese
    assert "fs/v2/S1/D1/telemetry：不是契约规定的主题" in chinese
    assert "看起来是秒，而不是纪元毫秒" in chinese
    assert chinese.endswith("失败：10 条规则中 4 条不合格，共 4 条消息")
    for template in ("not a contract topic", " checked", "rules failed", "looks like"):
        assert template not in chinese


def test_conformance_rules_vocabulary() -> None:
    assert i18n.CONFORMANCE_RULES == RULES


def _firesafe(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("LC_", "LANG", "FIRESAFE_"))}
    return subprocess.run(
        [sys.executable, "-m", "firesafe.cli", *args],
        capture_output=True,
        text=True,
        env={**base, **env},
        timeout=60,
        check=False,
    )


def test_cli_follows_lang_and_the_flag() -> None:
    chinese = _firesafe(["--help"], LANG="zh_CN.UTF-8")
    assert chinese.returncode == 0, chinese.stderr
    assert "智慧消防物联网监控平台" in chinese.stdout
    assert "检查设备的通信" in chinese.stdout or "按契约检查设备的通信" in chinese.stdout
    english = _firesafe(["--lang", "en", "--help"], LANG="zh_CN.UTF-8")
    assert "Smart fire-safety IoT monitoring platform." in english.stdout
    flag = _firesafe(["--lang", "zh-CN", "--help"])
    assert "智慧消防物联网监控平台" in flag.stdout
    sim = _firesafe(["sim", "--help"], LANG="zh_CN.UTF-8")
    assert "设备群中的站点数（默认 1）" in sim.stdout
    assert "注册时设置每个站点的时区" in sim.stdout
    after = _firesafe(["conformance", "--lang", "zh-CN", "--help"])
    assert "要判定其通信的站点" in after.stdout
    bad_config = _firesafe(["db", "migrate"], LC_ALL="zh_CN.UTF-8", FIRESAFE_API_PORT="99999")
    assert bad_config.returncode != 0
    assert "firesafe: 配置无效：" in bad_config.stderr
    # argparse's own words too, and its errors.
    assert chinese.stdout.startswith("用法：firesafe")
    missing = _firesafe(["conformance"], LANG="zh_CN.UTF-8")
    assert "错误：缺少以下必需参数：--site" in missing.stderr
    unknown = _firesafe(["--lang", "fr", "--help"])
    assert unknown.returncode != 0
    assert "unsupported language 'fr'" in unknown.stderr


# Error classes raised with English text, and how each turns its arguments into the message.
def _parameter(args: list[str]) -> str:
    return f"query parameter {args[0]!r}: {args[1]}"


def _field(args: list[str]) -> str:
    return f"{args[0]}: {args[1]}"


def _first(args: list[str]) -> str:
    return args[0]


_RAISED: dict[str, Callable[[list[str]], str]] = {
    "BadParameter": _parameter,
    "TooManyPoints": _parameter,
    "InvalidInputError": _field,
    **{
        name: _first
        for name in (
            "BadBody",
            "Unauthorized",
            "Forbidden",
            "NotFound",
            "ApiError",
            "NotFoundError",
            "OutOfScopeError",
            "ConflictError",
        )
    },
}


def _sample(node: ast.expr) -> str | None:
    """A message an f-string can produce (values stand in for its placeholders)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        parts = []
        for value in node.values:
            if isinstance(value, ast.Constant):
                parts.append(str(value.value))
            else:
                parts.append("'x7'" if getattr(value, "conversion", -1) == ord("r") else "7")
        return "".join(parts)
    return None


def _raised_messages() -> list[tuple[str, str]]:
    out = []
    for path in [*(ROOT / "api").rglob("*.py"), *(ROOT / "storage" / "queries").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call)):
                continue
            func = node.exc.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
            if name not in _RAISED:
                continue
            samples = [_sample(a) for a in node.exc.args]
            args = [a for a in samples if a is not None]
            if not args or len(args) < len(samples):
                continue  # built elsewhere (e.g. from pydantic's errors): not a literal
            where = f"{path.relative_to(ROOT)}:{node.lineno}"
            out.append((where, _RAISED[name](args)))
    return out


BEARER = "Authorization: Bearer"


def test_every_raised_api_message_has_a_chinese_template() -> None:
    messages = _raised_messages()
    assert len(messages) > 20, "the scan found too few messages: is it still looking?"
    untranslated = []
    for where, message in messages:
        text = localize(message, "zh-CN")
        # Two English words in a row left in the text: a part no template covered.
        leftover = text and re.search(r"[A-Za-z]{3,} [A-Za-z]{3,}", text.replace(BEARER, ""))
        if text is None or leftover:
            untranslated.append((where, message, text))
    assert not untranslated, (
        f"add a template to api.errors._TEMPLATES and its zh_CN translation: {untranslated}"
    )


def test_simulator_sets_site_time_zone_and_standard(api, api_url: str) -> None:  # type: ignore[no-untyped-def]
    from device_sim.registration import RegistrationError, configure_sites
    from tests.test_api_support import ADMIN_TOKEN

    register(api, device("S1-SD1"), device("S2-SD1", site="S2"))
    configure_sites(api_url, ADMIN_TOKEN, ["S1", "S2"], timezone="Asia/Shanghai", standard="GB")
    sites = {s["site"]: s for s in api.get("/api/v1/sites").json()["items"]}
    assert {(s["timezone"], s["standard"]) for s in sites.values()} == {("Asia/Shanghai", "GB")}
    with pytest.raises(RegistrationError, match="422"):
        configure_sites(api_url, ADMIN_TOKEN, ["S1"], timezone="Nowhere/Atlantis")


def test_local_time_of_a_site() -> None:
    from datetime import UTC, datetime

    moment = datetime(2026, 11, 25, 22, 31, 6, 123000, tzinfo=UTC)
    assert i18n.local_time(moment, "Asia/Shanghai") == "2026-11-26 06:31:06 +0800"
    assert i18n.local_time(moment, "UTC") == "2026-11-25 22:31:06 +0000"
    assert i18n.local_time(moment, "Europe/Berlin") == "2026-11-25 23:31:06 +0100"


def test_a_value_full_of_clause_separators_costs_no_template_pass_per_clause(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Gateway details are translated clause by clause; a caller's value of
    thousands of "; " would make that a pass over every template per run of
    clauses. Past a handful it is not tried (the value is kept as given)."""
    from api import errors

    passes = []
    by_template = errors._by_template

    def counted(message: str, lang: str, **kw: bool) -> str | None:
        passes.append(message)
        return by_template(message, lang, **kw)

    monkeypatch.setattr(errors, "_by_template", counted)
    value = "'" + "a; " * 5000 + "'"
    message = f"query parameter 'since': {value} is neither ISO 8601 nor epoch milliseconds"
    text = localize(message, "zh-CN")
    assert text is not None
    assert text.startswith("查询参数 'since'")
    assert len(passes) < 20
