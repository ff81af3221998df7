"""The simulator registers its estate through the real API, evac routes included."""

from __future__ import annotations

import psycopg
import pytest

from device_sim.estate import generate_estate
from device_sim.registration import register
from tests.test_api_support import ADMIN_TOKEN, client, live_server

pytestmark = pytest.mark.integration


def test_generated_estate_registers_through_the_api(db: str) -> None:
    estate = generate_estate(2, 60, seed=11, site_prefix="REG")
    registry = estate.registry()
    with live_server(db) as url:
        assert register(url, ADMIN_TOKEN, registry, batch=50) == len(registry)
        api = client(url)
        listed = api.get("/api/v1/devices", params={"limit": 1000}).json()["items"]
    by_id = {d["id"]: d for d in listed}
    assert set(by_id) == {d["id"] for d in registry}
    for d in registry:
        got = by_id[d["id"]]
        for key in ("site", "building", "floor", "zone", "kind"):
            assert got[key] == d[key]
        assert got["routes"] == d.get("routes")
    evac = [d for d in registry if d["kind"] == "evac" and d.get("routes")]
    assert evac, "the estate has signs with evacuation routes"
    with psycopg.connect(db) as conn:  # routes lead to zones of the same building and floor
        for d in evac:
            for zone in d["routes"].values():
                row = conn.execute(
                    "SELECT 1 FROM zones WHERE site_id = %s AND building = %s AND floor = %s "
                    "AND zone = %s",
                    (d["site"], d["building"], d["floor"], zone),
                ).fetchone()
                assert row is not None
