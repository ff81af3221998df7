"""/api/v1/notifications: targets and rules by role and site, secrets never shown,
validation, and the delivery audit of an alarm; notification figures in /metrics."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from tests.helpers import wait_for
from tests.test_api_support import ADMIN_TOKEN, client, device, live_server, make_token, register
from tests.test_notify_support import (
    add_rule,
    add_target,
    call_point,
    deliveries,
    http_receiver,
    running_notifier,
    transition,
    write_alarms,
)

pytestmark = pytest.mark.integration

TARGETS = "/api/v1/notifications/targets"
RULES = "/api/v1/notifications/rules"


@pytest.fixture(scope="module")
def api_url(database_url: str, migration: object) -> Iterator[str]:
    with live_server(database_url) as url:
        yield url


@pytest.fixture
def tokens(api_url: str, db: str) -> dict[str, str]:
    with client(api_url) as api:
        register(api, device("M1", site="S1", kind="mcp"), device("M2", site="S2", kind="mcp"))
    return {
        "admin": ADMIN_TOKEN,
        "operator": make_token(api_url, "operator", name="op"),
        "manager": make_token(api_url, "manager", ["S1"], name="mgr-s1"),
        "manager2": make_token(api_url, "manager", ["S2"], name="mgr-s2"),
    }


def hook(target_id: str, **extra: Any) -> dict[str, Any]:
    return {"id": target_id, "kind": "webhook", "url": f"http://127.0.0.1:9/{target_id}", **extra}


def test_targets_never_show_their_secret(api_url: str, tokens: dict[str, str]) -> None:
    with client(api_url) as api:
        created = api.post(TARGETS, json=hook("duty", secret="top-secret-value", language="zh"))
        assert created.status_code == 201, created.text
        replaced = api.post(TARGETS, json=hook("duty", language="en"))  # secret kept
        assert replaced.status_code == 200, replaced.text
        mail = api.post(TARGETS, json={"id": "m", "kind": "email", "address": "a@b.example"})
        assert mail.status_code == 201, mail.text
        listed = api.get(TARGETS)
        one = api.get(f"{TARGETS}/duty")
    for response in (created, replaced, listed, one):
        assert "top-secret-value" not in response.text
        assert "secret" not in [k for k in response.json() if k != "has_secret"]
    assert one.json()["has_secret"] is True
    assert one.json()["language"] == "en"
    assert mail.json()["has_secret"] is False
    with client(api_url) as api:  # as Accept-Language and --lang spell it
        tagged = api.post(TARGETS, json=hook("duty", language="zh-CN"))
    assert (tagged.status_code, tagged.json()["language"]) == (200, "zh")
    assert [t["id"] for t in listed.json()["items"]] == ["duty", "m"]


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ({"id": "x", "kind": "webhook"}, "url"),
        ({"id": "x", "kind": "webhook", "url": "ftp://host/x"}, "url"),
        ({"id": "x", "kind": "email", "address": "not-an-address"}, "address"),
        ({"id": "x", "kind": "email", "address": "a@b.c", "url": "http://h/"}, "url"),
        (hook("x", template="{alarm.password}"), "alarm.password"),
        (hook("x", template="{nope}"), "nope"),
        (hook("x", language="fr"), "language"),
        ({"id": "bad id", "kind": "webhook", "url": "http://h/"}, "id"),
    ],
)
def test_bad_targets_are_422(
    api_url: str, tokens: dict[str, str], body: dict[str, Any], where: str
) -> None:
    with client(api_url) as api:
        response = api.post(TARGETS, json=body)
    assert response.status_code == 422, response.text
    assert where in response.text


def test_rules_validate_and_targets_in_use_cannot_go(api_url: str, tokens: dict[str, str]) -> None:
    with client(api_url) as api:
        assert api.post(TARGETS, json=hook("duty")).status_code == 201
        assert api.post(TARGETS, json=hook("chief")).status_code == 201
        rule = {"id": "fires", "types": ["fire"], "targets": ["duty"]}
        bad = [
            {**rule, "targets": ["ghost"]},
            {**rule, "types": ["smoke"]},
            {**rule, "verdicts": ["suppressed"]},
            {**rule, "escalate_after_s": 60},
            {**rule, "escalate_to": ["chief"]},
            {**rule, "escalate_after_s": 0, "escalate_to": ["chief"]},
            {**rule, "sites": []},
        ]
        for body in bad:
            assert api.post(RULES, json=body).status_code == 422, body
        created = api.post(RULES, json={**rule, "escalate_after_s": 5, "escalate_to": ["chief"]})
        assert created.status_code == 201, created.text
        assert created.json()["verdicts"] == ["confirmed"]
        assert created.json()["sites"] is None
        assert api.delete(f"{TARGETS}/chief").status_code == 409
        assert api.post(RULES, json=rule).status_code == 200  # replaced: no escalation
        assert api.get(f"{RULES}/fires").json()["escalate_to"] == []
        assert api.delete(f"{TARGETS}/chief").status_code == 204
        assert api.delete(f"{TARGETS}/duty").status_code == 409
        assert api.delete(f"{RULES}/fires").status_code == 204
        assert api.delete(f"{RULES}/fires").status_code == 404
        assert api.delete(f"{TARGETS}/duty").status_code == 204


def test_managers_configure_their_own_sites_only(api_url: str, tokens: dict[str, str]) -> None:
    with client(api_url) as admin:
        assert admin.post(TARGETS, json=hook("hq")).status_code == 201
        assert (
            admin.post(
                RULES, json={"id": "hq-all", "types": ["fire"], "targets": ["hq"]}
            ).status_code
            == 201
        )
    with client(api_url, token=tokens["manager"]) as mgr:
        public = hook("s1-duty", url="http://8.8.8.8:9/s1-duty")  # public: never called here
        assert mgr.post(TARGETS, json=public).status_code == 201
        ok = {"id": "s1", "sites": ["S1"], "types": ["fire"], "targets": ["s1-duty"]}
        assert mgr.post(RULES, json=ok).status_code == 201
        assert mgr.post(RULES, json={**ok, "id": "s2", "sites": ["S2"]}).status_code == 403
        assert mgr.post(RULES, json={**ok, "id": "all", "sites": None}).status_code == 403
        # Another owner's target is not the manager's to use, see or overwrite.
        assert mgr.post(RULES, json={**ok, "id": "x", "targets": ["hq"]}).status_code == 422
        assert mgr.get(f"{TARGETS}/hq").status_code == 404
        assert mgr.post(TARGETS, json=hook("hq", url="http://8.8.8.8:9/hq")).status_code == 409
        assert mgr.delete(f"{RULES}/hq-all").status_code == 404
        assert [t["id"] for t in mgr.get(TARGETS).json()["items"]] == ["s1-duty"]
        assert [r["id"] for r in mgr.get(RULES).json()["items"]] == ["s1"]
    with client(api_url, token=tokens["manager2"]) as other:
        assert other.get(TARGETS).json()["items"] == []
        assert other.get(f"{RULES}/s1").status_code == 404
    with client(api_url, token=tokens["operator"]) as op:
        assert op.get(RULES).status_code == 403
        assert op.post(TARGETS, json=hook("op")).status_code == 403
    with client(api_url) as admin:
        assert {r["id"] for r in admin.get(RULES).json()["items"]} == {"hq-all", "s1"}


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000/api/v1/tokens",  # the API itself
        "http://localhost:5432/",  # the database, by name
        "http://10.1.2.3/hook",
        "http://169.254.169.254/latest/meta-data/",  # a cloud metadata service
        "http://[::1]:1883/",
        "http://[::ffff:127.0.0.1]/",
    ],
)
def test_a_managers_webhook_may_not_reach_private_addresses(
    api_url: str, tokens: dict[str, str], url: str
) -> None:
    with client(api_url, token=tokens["manager"]) as mgr:
        refused = mgr.post(TARGETS, json=hook("s1-ssrf", url=url))
        assert refused.status_code == 422, refused.text
        assert "non-public address" in refused.json()["error"]["message"]
        assert mgr.get(f"{TARGETS}/s1-ssrf").status_code == 404
    with client(api_url) as admin:  # an admin's may (an on-premises paging gateway)
        assert admin.post(TARGETS, json=hook("hq-local", url=url)).status_code == 201


def test_target_errors_speak_the_callers_language(api_url: str, tokens: dict[str, str]) -> None:
    """An outside check: the resolver's error for a manager's webhook host and an
    unknown template placeholder reached Chinese callers as English."""
    zh = {"Accept-Language": "zh-CN"}
    nowhere = hook("s1-nx", url="http://nx-host.invalid/hook")  # RFC 6761: never resolves
    with client(api_url, token=tokens["manager"]) as mgr:
        en = mgr.post(TARGETS, json=nowhere)
        chinese = mgr.post(TARGETS, json=nowhere, headers=zh)
    assert en.status_code == chinese.status_code == 422, en.text
    assert en.json()["error"]["message"] in (
        "body url: webhook host nx-host.invalid does not resolve (no such host)",
        "body url: webhook host nx-host.invalid did not resolve: the name servers did not "
        "answer (try again)",  # (a machine without a name server)
    )
    assert chinese.json()["error"]["message"] in (
        "请求体 url：webhook 主机 nx-host.invalid 无法解析（没有这个主机名）",
        "请求体 url：webhook 主机 nx-host.invalid 未能解析：域名服务器没有应答（请稍后重试）",
    )
    known = "{event} {text} {subject} {delivery} {language} {escalation} {alarm.<field>}"
    with client(api_url) as api:
        en = api.post(TARGETS, json=hook("t", template="a {nope} b"))
        chinese = api.post(TARGETS, json=hook("t", template="a {nope} b"), headers=zh)
        field_en = api.post(TARGETS, json=hook("t", template="{alarm.password}"))
        field_zh = api.post(TARGETS, json=hook("t", template="{alarm.password}"), headers=zh)
    assert en.json()["error"]["message"] == (
        f"body: template: unknown placeholder {{nope}} (known: {known})"
    )
    assert chinese.json()["error"]["message"] == (
        f"请求体：template：未知的占位符 {{nope}}（可用：{known}）"
    )
    assert field_en.json()["error"]["message"].startswith(
        "body: template: no such alarm field {alarm.password} (known: id, type, verdict, "
    )
    assert field_zh.json()["error"]["message"].startswith(
        "请求体：template：报警没有字段 {alarm.password}（可用：id, type, verdict, "
    )


@pytest.mark.parametrize(
    "body",
    [
        hook("bad", url="http://8.8.8.8:99999/x"),  # port out of range
        hook("bad", url="http://8.8.8.8:-1/x"),
        hook("bad", url="http://[::1/x"),
        hook("bad", url="http://[zz]/"),
        hook("bad", template="{text}", content_type="text/plain;\r\nX-Injected: yes"),
        hook("bad", template="{text}", content_type="text/plain; a=\x7f"),
        hook("bad", template="{text}", content_type="text/plain; x=\u0085"),
        hook("bad", template="{text}", content_type="text/plain; x=é"),
        hook("bad", url="http://a..com/"),  # an empty DNS label (idna)
        hook("bad", url="http://" + "a" * 64 + ".com/"),
        hook("bad", url="http://8.8.8.8:0/x"),
        hook("bad", url="http://8.8.8.8:/x"),
        hook("bad", template="{text}\x00"),  # (the database's error before: misleading)
        hook("bad", secret="s\x00"),
    ],
)
@pytest.mark.parametrize("role", ["admin", "manager"])
def test_a_target_no_delivery_could_use_is_refused_for_every_role(
    api_url: str, tokens: dict[str, str], body: dict[str, Any], role: str
) -> None:
    """An outside check: a manager's webhook with a bad port got a 500, an
    admin's was stored and failed every delivery; a content type with CR LF
    was stored and every delivery was refused by the HTTP client."""
    with client(api_url, token=tokens[role]) as c:
        refused = c.post(TARGETS, json=body)
        assert refused.status_code == 422, refused.text
        assert c.get(f"{TARGETS}/bad").status_code == 404


def test_two_owners_creating_one_target_id_at_once_never_share_it(
    api_url: str, tokens: dict[str, str], db: str
) -> None:
    """An outside check: managers of two sites creating one target id at the
    same moment: 3 rounds in 12 stored the first's ownership with the
    second's URL (one site's fire notifications sent to the other's endpoint),
    the second being told 404 although its write was committed."""
    from concurrent.futures import ThreadPoolExecutor

    urls = {"manager": "https://8.8.8.8/m1", "manager2": "https://1.1.1.1/m2"}
    sites = {"manager": ["S1"], "manager2": ["S2"]}

    def create(role: str, target_id: str) -> int:
        with client(api_url, token=tokens[role]) as c:
            return c.post(TARGETS, json=hook(target_id, url=urls[role])).status_code

    with ThreadPoolExecutor(2) as pool:
        for n in range(12):
            target_id = f"race{n}"
            codes = dict(zip(urls, pool.map(create, urls, [target_id] * 2), strict=True))
            with psycopg.connect(db) as conn:
                row = conn.execute(
                    "SELECT url, owner_sites FROM notify_targets WHERE id = %s", (target_id,)
                ).fetchone()
            assert row is not None
            [winner] = [r for r, c in codes.items() if c == 201]
            assert row == (urls[winner], sites[winner]), (codes, row)
            loser = next(r for r in codes if r != winner)
            assert codes[loser] == 409, codes


def test_the_audit_lists_every_attempt(api_url: str, tokens: dict[str, str], db: str) -> None:
    with http_receiver() as rx:
        rx.respond = lambda path, n: 503 if n < 2 else 200
        with client(api_url) as api:
            assert api.post(TARGETS, json=hook("duty", url=rx.url + "/d")).status_code == 201
            rule = {"id": "r", "sites": ["S1", "S2"], "types": ["fire"], "targets": ["duty"]}
            assert api.post(RULES, json=rule).status_code == 201
        with running_notifier(db):
            (a1,) = write_alarms(db, transition("M1", "S1", zone="Z1"))
            wait_for(lambda: deliveries(db, a1)[0]["status"] == "delivered")
        (a2,) = write_alarms(db, transition("M2", "S2", zone="Z1"))
    with client(api_url, token=tokens["manager"]) as mgr:
        audit = mgr.get(f"/api/v1/alarms/{a1}/notifications")
        assert mgr.get(f"/api/v1/alarms/{a2}/notifications").status_code == 403
        assert mgr.get("/api/v1/alarms/nope/notifications").status_code == 404
    assert audit.status_code == 200, audit.text
    (item,) = audit.json()["items"]
    assert item["target"] == "duty"
    assert item["kind"] == "webhook"
    assert item["event"] == "confirmed"
    assert (item["status"], item["attempts"], item["last_status"]) == ("delivered", 3, 200)
    assert item["delivered_at"] is not None
    assert item["next_attempt_at"] is None
    assert [(a["attempt"], a["status"]) for a in item["attempt_log"]] == [
        (1, 503),
        (2, 503),
        (3, 200),
    ]
    with client(api_url) as api:
        pending = api.get(f"/api/v1/alarms/{a2}/notifications").json()["items"]
        metrics = api.get("/metrics").text
    assert [(p["status"], p["attempts"]) for p in pending] == [("pending", 0)]
    assert 'firesafe_notify_attempts_total{kind="webhook",outcome="delivered"} 1.0' in metrics
    assert 'firesafe_notify_attempts_total{kind="webhook",outcome="attempt_failed"} 2.0' in metrics
    assert "firesafe_notify_latency_seconds_count 1.0" in metrics
    assert 'firesafe_notify_latency_seconds_bucket{le="+Inf"} 1.0' in metrics
    assert "firesafe_notify_undelivered 1.0" in metrics


def test_least_privilege_roles(db: str, site: str) -> None:
    """Migration 0050's roles: ingest writes the outbox through the trigger without
    reading targets; dashboards read the outbox, not the targets (URLs with tokens,
    signing secrets); the API's role (also the notifier's) reads both."""
    with psycopg.connect(db, autocommit=True) as conn:
        roles = {r for (r,) in conn.execute("SELECT rolname FROM pg_roles")}
    if not {"firesafe_ingest", "firesafe_api", "firesafe_grafana"} <= roles:
        pytest.skip("the migrating user could not create the group roles")
    add_target(db, "duty", url="http://127.0.0.1:9/duty", secret="s")
    add_rule(db, "fires", types=["fire"], targets=["duty"])
    call_point(db, f"{site}-M1", site)
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("SET ROLE firesafe_ingest")
        with conn.transaction():
            conn.execute(
                "INSERT INTO alarms (id, device_id, site_id, building, floor, zone, type, "
                "verdict, reason, opened_at) VALUES ('L1', %s, %s, 'B1', '2', 'Z1', 'fire', "
                "'confirmed', 'call_point', now())",
                (f"{site}-M1", site),
            )
            conn.execute(
                "INSERT INTO alarm_log (alarm_id, action, actor) VALUES ('L1', 'opened', 'system')"
            )
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT secret FROM notify_targets")
        conn.execute("RESET ROLE")
        conn.execute("SET ROLE firesafe_grafana")
        assert conn.execute("SELECT count(*) FROM notifications").fetchone() == (1,)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT url FROM notify_targets")
        conn.execute("RESET ROLE")
        conn.execute("SET ROLE firesafe_api")
        assert conn.execute("SELECT secret FROM notify_targets").fetchone() == ("s",)
        conn.execute("UPDATE notifications SET attempts = attempts")
