"""Registrations at the same moment (an outside check): overlapping device
lists in other orders deadlocked (a 503 for one request in four), and two
transmission devices given one address at once got a 500 from the unique
index instead of the 422 the check before it gives."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import psycopg
from psycopg.rows import dict_row

from storage.queries.devices import DeviceSpec, upsert_devices
from storage.queries.errors import InvalidInputError


def _spec(site: str, i: int, **extra: Any) -> DeviceSpec:
    return DeviceSpec(
        id=f"{site}-D{i:03d}", site=site, building="B", floor="1", zone=f"Z{i % 7}", **extra
    )


async def _upsert(db: str, devices: list[DeviceSpec]) -> str:
    async with await psycopg.AsyncConnection.connect(
        db, autocommit=True, row_factory=dict_row
    ) as conn:
        try:
            await upsert_devices(conn, devices=devices)
        except InvalidInputError as exc:
            return f"invalid: {exc}"
        return "ok"


def test_overlapping_registrations_in_other_orders_do_not_deadlock(db: str) -> None:
    site = f"R{uuid.uuid4().hex[:8]}"
    devices = [_spec(site, i, kind="smoke") for i in range(300)]

    async def rounds() -> list[str]:
        results: list[str] = []
        for _ in range(3):
            results += await asyncio.gather(
                *(_upsert(db, devices if k % 2 else devices[::-1]) for k in range(4))
            )
        return results

    assert asyncio.run(rounds()) == ["ok"] * 12


def test_one_address_given_to_two_devices_at_once_is_refused_not_an_error(db: str) -> None:
    site = f"R{uuid.uuid4().hex[:8]}"

    async def race() -> list[str]:
        # The site and its zones exist already: nothing else serializes the race.
        assert await _upsert(db, [_spec(site, 100 + i, kind="smoke") for i in range(7)]) == "ok"
        return list(
            await asyncio.gather(
                *(
                    _upsert(db, [_spec(site, i, kind="uitd", address="00000000AB02")])
                    for i in range(8)
                )
            )
        )

    results = asyncio.run(race())
    assert results.count("ok") == 1, results
    assert all("address" in r for r in results if r != "ok"), results


def test_a_plain_registration_never_moves_a_device_a_move_just_took_elsewhere(db: str) -> None:
    """An outside check: a move (move_site=true) to SW1 and a plain upsert of
    the same devices at SW0 at the same moment: in 15 rounds of 20 both
    succeeded and the devices ended back at SW0, silently moved without
    move_site. Now the plain one is a conflict whenever the move committed
    first, and the devices are where the last successful call put them."""
    from storage.queries.errors import ConflictError

    async def upsert(devices: list[DeviceSpec], move: bool) -> str:
        async with await psycopg.AsyncConnection.connect(
            db, autocommit=True, row_factory=dict_row
        ) as conn:
            try:
                await upsert_devices(conn, devices=devices, move_site=move)
            except ConflictError:
                return "conflict"
            return "ok"

    async def rounds() -> None:
        for n in range(6):
            base = f"W{uuid.uuid4().hex[:6]}"
            home = [_spec(f"{base}0", i, kind="smoke") for i in range(200)]
            ids = [d.id for d in home]
            assert await upsert(home, move=False) == "ok"
            moved = [DeviceSpec(i, f"{base}1", "B", "1", "Z1", "smoke") for i in ids]
            plain = [DeviceSpec(i, f"{base}0", "B", "1", "Zplain", "smoke") for i in ids]
            results = list(await asyncio.gather(upsert(moved, True), upsert(plain, False)))
            async with await psycopg.AsyncConnection.connect(db) as conn:
                cur = await conn.execute(
                    "SELECT DISTINCT site_id, zone FROM devices WHERE id = ANY(%s)", (ids,)
                )
                where = await cur.fetchall()
            if results == ["ok", "ok"]:  # the plain one committed first, then the move
                assert where == [(f"{base}1", "Z1")], (n, where)
            else:
                assert results == ["ok", "conflict"], (n, results)
                assert where == [(f"{base}1", "Z1")], (n, where)

    asyncio.run(rounds())
