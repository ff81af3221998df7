"""Standards: the GB/EN clause table, and a site's standard reaching its devices' thresholds."""

from __future__ import annotations

import asyncio

import psycopg
import pytest
from psycopg.rows import dict_row

from detection import params
from detection.engine import resolve_thresholds
from detection.standards import CLAUSES, GB_LEVELS, LEVELS, STANDARDS, with_standard_defaults
from firesafe import i18n
from ingest.registry import device_from_row
from storage import ingest_store
from storage.queries import Scope
from storage.queries import sites as sites_q

# A GB table with a differing level, to exercise the hook whatever the real table holds.
LEVELS_WITH_GB_SMOKE = {"EN": {}, "GB": {"smoke": {"obscuration_alarm": 2.5}}}


def test_clause_table_is_consistent() -> None:
    assert STANDARDS == i18n.STANDARDS
    topics = [c.topic for c in CLAUSES]
    assert len(topics) == len(set(topics))
    for clause in CLAUSES:
        assert clause.en
        assert clause.gb.startswith("GB")
        if clause.topic in params.THRESHOLD_NAMES:
            assert clause.differs == any(clause.topic in lv for lv in GB_LEVELS.values())
    for kind, levels in GB_LEVELS.items():
        for name, value in levels.items():
            assert name in params.THRESHOLD_DEFAULTS[kind], (kind, name)
            assert value != params.THRESHOLD_DEFAULTS[kind][name], "not a difference"
            assert next(c for c in CLAUSES if c.topic == name).differs


def test_site_standard_beneath_device_overrides() -> None:
    assert with_standard_defaults("EN", "smoke", {"verification_s": 20.0}) == {
        "verification_s": 20.0
    }
    gb = with_standard_defaults("GB", "smoke", {}, LEVELS_WITH_GB_SMOKE)
    assert gb == {"obscuration_alarm": 2.5}
    assert resolve_thresholds("smoke", gb)["obscuration_alarm"] == 2.5
    # The device's own value wins; other kinds and unknown standards are untouched.
    own = with_standard_defaults("GB", "smoke", {"obscuration_alarm": 4.0}, LEVELS_WITH_GB_SMOKE)
    assert own == {"obscuration_alarm": 4.0}
    assert with_standard_defaults("GB", "heat", {}, LEVELS_WITH_GB_SMOKE) == {}
    assert with_standard_defaults("XX", "smoke", {}, LEVELS_WITH_GB_SMOKE) == {}
    assert LEVELS["GB"] is GB_LEVELS


def test_registry_rows_carry_the_site_standard(db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("INSERT INTO sites (id) VALUES ('S1'), ('S2')")
        conn.execute("INSERT INTO buildings VALUES ('S1', 'B1'), ('S2', 'B1')")
        conn.execute("INSERT INTO floors VALUES ('S1', 'B1', '1'), ('S2', 'B1', '1')")
        conn.execute("INSERT INTO zones (site_id, building, floor, zone) VALUES "
                     "('S1', 'B1', '1', 'Z1'), ('S2', 'B1', '1', 'Z1')")  # fmt: skip
        conn.execute(
            "INSERT INTO devices (id, site_id, building, floor, zone, kind, thresholds) VALUES "
            "('S1-SD1', 'S1', 'B1', '1', 'Z1', 'smoke', '{}'), "
            "('S2-SD1', 'S2', 'B1', '1', 'Z1', 'smoke', '{\"verification_s\": 20}')"
        )

    async def scenario() -> list[dict[str, object]]:
        async with await psycopg.AsyncConnection.connect(
            db, autocommit=True, row_factory=dict_row
        ) as conn:
            query = "SELECT max(updated_at) AS at FROM devices WHERE site_id = 'S2'"
            stamp = await (await conn.execute(query)).fetchone()
            await sites_q.upsert_site(
                conn, scope=Scope.everything(), site="S2", name=None, timezone=None, standard="GB"
            )
            changed = await (await conn.execute(query)).fetchone()
            assert stamp is not None
            assert changed is not None
            assert changed["at"] > stamp["at"], "ingest must see the site's devices as changed"
            return await ingest_store.load_registry(conn)

    rows = {r["id"]: r for r in asyncio.run(scenario())}
    assert rows["S1-SD1"]["standard"] == "EN"
    assert rows["S2-SD1"]["standard"] == "GB"
    monkeypatch.setattr(
        "ingest.registry.with_standard_defaults",
        lambda std, kind, over: with_standard_defaults(std, kind, over, LEVELS_WITH_GB_SMOKE),
    )
    assert device_from_row(rows["S1-SD1"]).thresholds == {}
    assert device_from_row(rows["S2-SD1"]).thresholds == {
        "obscuration_alarm": 2.5,
        "verification_s": 20.0,
    }
