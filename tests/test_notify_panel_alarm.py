"""A fire panel's alarm (GB/T 26875.3 gateway, reason `panel_alarm`) waits
`pending` for corroboration or a person, and is never confirmed by time. The
outside check's finding: under a rule with the default verdicts (`confirmed`)
nobody was told of it, for 13 minutes and on. It is told when it opens, and
escalated when nobody acknowledges it (migration 0180); a detector's own
pending window is still told only to rules asking for `pending`."""

from __future__ import annotations

import asyncio

import psycopg
import pytest
from psycopg.rows import dict_row

from storage.queries import alarms as alarm_q
from storage.queries.common import Scope
from tests.helpers import query, register
from tests.test_notify_support import add_rule, add_target, deliveries, transition, write_alarms

pytestmark = pytest.mark.integration


def verify(dsn: str, alarm_id: str, verdict: str) -> None:
    """What POST /api/v1/alarms/{id}/confirm (or /dismiss) does."""

    async def go() -> None:
        async with await psycopg.AsyncConnection.connect(
            dsn, autocommit=True, row_factory=dict_row
        ) as conn:
            await alarm_q.verify(
                conn,
                scope=Scope.everything(),
                alarm_id=alarm_id,
                actor="duty-officer",
                note=None,
                verdict=verdict,
            )

    asyncio.run(go())


def test_a_pending_panel_alarm_is_told_to_rules_of_confirmed_fires_and_escalated(
    db: str, site: str
) -> None:
    add_target(db, "duty", url="http://127.0.0.1:9/duty")
    add_target(db, "chief", url="http://127.0.0.1:9/chief")
    add_rule(
        db, "fires", types=["fire"], targets=["duty"], escalate_after_s=60, escalate_to=["chief"]
    )
    add_rule(db, "faults", types=["fault"], targets=["chief"])
    register(
        db,
        [
            {"id": f"{site}-P{i}", "site": site, "building": "B1", "floor": "2", "zone": f"Z{i}"}
            | {"kind": "smoke"}
            for i in (1, 2, 3, 4)
        ],
    )
    # A panel point's fire: told at once, and its escalation scheduled.
    (panel,) = write_alarms(
        db, transition(f"{site}-P1", site, verdict="pending", reason="panel_alarm", zone="Z1")
    )
    rows = deliveries(db, panel)
    assert [(r["event"], r["target_id"]) for r in rows] == [("opened", "duty")]
    assert (rows[0]["alarm"]["verdict"], rows[0]["alarm"]["reason"]) == ("pending", "panel_alarm")
    assert query(
        db,
        "SELECT rule_id, next_at > now() + interval '50 s' FROM notify_escalations "
        "WHERE alarm_id = %s",
        (panel,),
    ) == [("fires", True)]
    # A walk test's alarm (the panel in test mode): a person's to decide, told
    # to no one, not even a rule asking for pending alarms (an outside check
    # found it `opened` and `cleared` there), and never escalated.
    add_rule(db, "all-pending", types=["fire"], targets=["chief"], verdicts=["pending"])
    (walk_test,) = write_alarms(
        db, transition(f"{site}-P4", site, verdict="pending", reason="panel_test", zone="Z4")
    )
    assert deliveries(db, walk_test) == []
    assert query(db, "SELECT 1 FROM notify_escalations WHERE alarm_id = %s", (walk_test,)) == []
    write_alarms(
        db,
        transition(
            f"{site}-P4",
            site,
            action="verdict",
            verdict="suppressed",
            reason="panel_test_ended",
            zone="Z4",
        ),
    )
    assert deliveries(db, walk_test) == []
    query(db, "DELETE FROM notify_rules WHERE id = 'all-pending' RETURNING id")
    # A detector's own window waiting for its verdict: not told (the rule asks
    # for confirmed fires), nothing escalates.
    (window,) = write_alarms(
        db, transition(f"{site}-P2", site, verdict="pending", reason="obscuration", zone="Z2")
    )
    assert deliveries(db, window) == []
    assert query(db, "SELECT 1 FROM notify_escalations WHERE alarm_id = %s", (window,)) == []
    # The operator confirms the panel's alarm: told as confirmed; the escalation
    # goes on until someone acknowledges it.
    verify(db, panel, "confirmed")
    assert [(r["event"], r["target_id"]) for r in deliveries(db, panel)] == [
        ("opened", "duty"),
        ("confirmed", "duty"),
    ]
    assert query(db, "SELECT count(*) FROM notify_escalations WHERE alarm_id = %s", (panel,)) == [
        (1,)
    ]
    # Another panel alarm, reset at the panel: who was told hears it ended, and
    # its escalation stops.
    (reset,) = write_alarms(
        db, transition(f"{site}-P3", site, verdict="pending", reason="panel_alarm", zone="Z3")
    )
    write_alarms(
        db,
        transition(
            f"{site}-P3",
            site,
            action="verdict",
            verdict="suppressed",
            reason="panel_reset",
            zone="Z3",
        ),
    )
    assert [(r["event"], r["target_id"]) for r in deliveries(db, reset)] == [
        ("opened", "duty"),
        ("cleared", "duty"),
    ]
    assert query(db, "SELECT 1 FROM notify_escalations WHERE alarm_id = %s", (reset,)) == []
