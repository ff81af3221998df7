"""What a gateway needs of the registry, through the REST API (it imports no storage).

- Transmission devices by address: `GET /api/v1/devices?kind=uitd` (all pages),
  cached and reloaded every DIRECTORY_TTL_S, and at once (at most every
  MISS_RELOAD_S) when an address is not known: a device registered a moment
  ago is found on its first frame.
- Components on their first frame: the gateway lists the site's devices once,
  then `POST /api/v1/devices` for the ones the registry does not have. Ingest
  reloads its registry when a message names an unknown device, at most every
  50 ms (ingest.service.REGISTRY_MIN_GAP_S); waiting REGISTRY_SETTLE_S after
  the POST before publishing makes sure it looks again after the commit.

`DirectoryUnavailable` means the API could not answer: the gateway then does
not confirm the frame, and the device resends it later.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any, Final

import httpx

from gateways.gb26875.codec import DEFAULT_UTC_OFFSET_MIN
from gateways.gb26875.mapping import Component, Uitd

log = logging.getLogger(__name__)

DIRECTORY_TTL_S: Final = 10.0  # an address moved to another device is seen within this
MISS_RELOAD_S: Final = 1.0  # unknown addresses reload at most this often
REGISTRY_SETTLE_S: Final = 0.1  # > ingest's REGISTRY_MIN_GAP_S (50 ms)
PAGE: Final = 1000
HTTP_TIMEOUT_S: Final = 10.0


class DirectoryUnavailable(Exception):
    """The registry could not be read or written (API down, refused, bad token)."""


class RegistrationRefused(Exception):
    """The API refused the components (a 4xx other than auth): resending cannot help."""


class Directory:
    def __init__(
        self, api_url: str, token: str | None, *, client: httpx.AsyncClient | None = None
    ) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = client or httpx.AsyncClient(
            base_url=api_url, headers=headers, timeout=HTTP_TIMEOUT_S
        )
        self._by_address: dict[str, Uitd] = {}
        self._loaded_at = -1e9
        self._known: dict[str, set[str]] = {}  # site -> device ids the registry has
        self._reload = asyncio.Lock()
        self._register = asyncio.Lock()

    async def close(self) -> None:
        await self._http.aclose()

    async def _get(self, path: str, params: dict[str, Any]) -> Any:
        try:
            response = await self._http.get(path, params=params)
        except httpx.HTTPError as exc:
            raise DirectoryUnavailable(f"API unreachable: {exc}") from exc
        if response.status_code != 200:
            raise DirectoryUnavailable(f"GET {path}: HTTP {response.status_code} {response.text}")
        return response.json()

    async def _pages(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            query = dict(params, limit=PAGE)
            if cursor:
                query["cursor"] = cursor
            page = await self._get("/api/v1/devices", query)
            items.extend(page["items"])
            cursor = page.get("next_cursor")
            if not cursor:
                return items

    async def reload(self) -> None:
        async with self._reload:
            rows = await self._pages({"kind": "uitd"})
            self._by_address = {
                str(r["address"]).upper(): Uitd(
                    id=r["id"],
                    site=r["site"],
                    building=r["building"],
                    floor=r["floor"],
                    zone=r["zone"],
                    utc_offset_min=(
                        r["utc_offset_min"]
                        if r.get("utc_offset_min") is not None
                        else DEFAULT_UTC_OFFSET_MIN
                    ),
                )
                for r in rows
                if r.get("address")
            }
            self._loaded_at = time.monotonic()

    async def lookup(self, address: str) -> Uitd | None:
        """The transmission device registered with this address, or None."""
        age = time.monotonic() - self._loaded_at
        if age >= DIRECTORY_TTL_S or (address not in self._by_address and age >= MISS_RELOAD_S):
            await self.reload()
        return self._by_address.get(address)

    async def ensure(self, components: Sequence[Component]) -> None:
        """Register the components the registry does not have yet (never overwrites
        one it has: an admin may have set its floor, zone and thresholds)."""
        missing = [c for c in components if c.id not in self._known.get(c.site, ())]
        if not missing:
            return
        async with self._register:
            for site in {c.site for c in missing}:
                if site not in self._known:
                    rows = await self._pages({"site": site})
                    self._known[site] = {r["id"] for r in rows}
            missing = [c for c in missing if c.id not in self._known[c.site]]
            if not missing:
                return
            try:
                response = await self._http.post(
                    "/api/v1/devices", json=[c.body() for c in missing]
                )
            except httpx.HTTPError as exc:
                raise DirectoryUnavailable(f"API unreachable: {exc}") from exc
            if response.status_code in (400, 409, 422):
                raise RegistrationRefused(
                    f"registering {[c.id for c in missing][:5]}: HTTP {response.status_code} "
                    f"{response.text[:300]}"
                )
            if response.status_code not in (200, 201):
                raise DirectoryUnavailable(
                    f"registering {len(missing)} component(s): HTTP {response.status_code} "
                    f"{response.text[:300]}"
                )
            for c in missing:
                self._known[c.site].add(c.id)
            log.info("registered %d component(s): %s", len(missing), [c.id for c in missing][:5])
            await asyncio.sleep(REGISTRY_SETTLE_S)
