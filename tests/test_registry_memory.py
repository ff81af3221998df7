"""The registry cache keeps nothing of the database rows it was built from, and
shares what devices have in common (issue #9: memory per registered device)."""

from __future__ import annotations

from typing import Any

import pytest

from ingest.registry import Registry, device_from_row


def row(i: int, site: str, thresholds: dict[str, Any]) -> dict[str, Any]:
    # Fresh objects per row, as the database driver makes them.
    return {
        "id": "".join(["D", str(i)]),
        "slot": 100_000 + i,
        "site_id": "".join(["S", site]),
        "building": "".join(["B", "1"]),
        "floor": "".join(["F", "2"]),
        "zone": "".join(["Z", "3"]),
        "kind": "".join(["sm", "oke"]),
        "interval_s": 60.0 + 0.5,
        "thresholds": thresholds,
        "routes": {"".join(["fi", "re"]): "".join(["ops", "@x"])} if i == 0 else None,
        "standard": None,
        "registered_ms": 1_700_000_000_000 + i,
    }


def test_devices_keep_no_object_of_their_rows_and_share_names_and_levels() -> None:
    rows = [row(i, "7", {"obscuration_alarm": 3.5} if i < 2 else {}) for i in range(4)]
    devices = [device_from_row(r) for r in rows]
    for r, d in zip(rows, devices, strict=True):
        assert (d.id, d.site, d.building, d.kind) == (r["id"], r["site_id"], "B1", "smoke")
        assert (d.slot, d.registered_ms, d.interval_s) == (
            r["slot"],
            r["registered_ms"],
            r["interval_s"],
        )
        for mine, theirs in [
            (d.id, r["id"]),
            (d.site, r["site_id"]),
            (d.building, r["building"]),
            (d.floor, r["floor"]),
            (d.zone, r["zone"]),
            (d.kind, r["kind"]),
            (d.slot, r["slot"]),
            (d.registered_ms, r["registered_ms"]),
            (d.interval_s, r["interval_s"]),
        ]:
            assert mine is not theirs  # a kept object would pin the rows' memory
    assert devices[0].routes == {"fire": "ops@x"}
    assert devices[0].routes is not None
    key, value = next(iter(devices[0].routes.items()))
    assert key is not next(iter(rows[0]["routes"]))
    assert value is not next(iter(rows[0]["routes"].values()))
    # Shared: one object per name and per threshold set.
    assert devices[1].site is devices[3].site
    assert devices[0].thresholds is devices[1].thresholds
    assert devices[2].thresholds is devices[3].thresholds
    assert devices[0].thresholds["obscuration_alarm"] == 3.5
    assert devices[0].thresholds != devices[2].thresholds
    with pytest.raises(TypeError):
        devices[0].thresholds["obscuration_alarm"] = 9.0  # type: ignore[index]
    registry = Registry(devices)
    assert registry.get("D2") is devices[2]
    assert registry.detection_config()[3][0]["obscuration_alarm"] == 3.5
