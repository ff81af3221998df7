"""What a gateway needs of the registry, through the REST API (it imports no storage).

- Transmission devices by address: `GET /api/v1/devices?kind=uitd` (all pages),
  cached and reloaded every DIRECTORY_TTL_S, and at once (at most every
  MISS_RELOAD_S) when an address is not known: a device registered a moment
  ago is found on its first frame.
- Components on their first frame: the gateway lists the site's devices once,
  then `POST /api/v1/devices?only_new=true` for the ones it has not seen there
  (the registry leaves any registered meanwhile, by an admin, as they are). Ingest
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
from datetime import datetime
from typing import Any, Final

import httpx

from gateways.gb26875.mapping import Component, Uitd

log = logging.getLogger(__name__)

DIRECTORY_TTL_S: Final = 10.0  # an address moved to another device is seen within this
MISS_RELOAD_S: Final = 1.0  # unknown addresses reload at most this often
REGISTRY_SETTLE_S: Final = 0.1  # > ingest's REGISTRY_MIN_GAP_S (50 ms)
PAGE: Final = 1000
HTTP_TIMEOUT_S: Final = 10.0
# Ingest subscribes to a site's topics when its registry poll (every 2 s) sees
# the site's first device; what is published for the site before that has no
# subscriber and the broker drops it. A uitd registered less than this ago has
# its frames held (not refused) until then.
SUBSCRIBE_GRACE_S: Final = 4.0


def _ready_ms(created_at: object) -> int:
    if not isinstance(created_at, str):
        return 0
    try:
        created = datetime.fromisoformat(created_at)
    except ValueError:
        return 0
    return int(created.timestamp() * 1000 + SUBSCRIBE_GRACE_S * 1000)


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
        self._pending: dict[str, Component] = {}  # waiting for the next POST
        self._batch: asyncio.Future[None] | None = None  # what they wait on
        self._flushing: set[asyncio.Task[None]] = set()
        self._refused: dict[str, str] = {}  # component id -> why the API refused it

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

    async def reload(self, *, unless_since: float | None = None) -> None:
        """Reload the uitds; skipped when another reload finished after `unless_since`
        (many connections asking at once share one request)."""
        async with self._reload:
            if unless_since is not None and self._loaded_at >= unless_since:
                return
            rows = await self._pages({"kind": "uitd"})
            zones = await self._site_zones()
            self._by_address = {
                str(r["address"]).upper(): Uitd(
                    id=r["id"],
                    site=r["site"],
                    building=r["building"],
                    floor=r["floor"],
                    zone=r["zone"],
                    utc_offset_min=r.get("utc_offset_min"),
                    timezone=zones.get(r["site"]),
                    ready_ms=_ready_ms(r.get("created_at")),
                )
                for r in rows
                if r.get("address")
            }
            self._loaded_at = time.monotonic()

    def cached(self, address: str) -> Uitd | None:
        """The uitd from the cache when the cache is fresh and knows it (no I/O)."""
        if time.monotonic() - self._loaded_at >= DIRECTORY_TTL_S:
            return None
        return self._by_address.get(address)

    def registered(self, components: Sequence[Component]) -> bool:
        """Every one of them is known to be in the registry (no I/O)."""
        return all(c.id in self._known.get(c.site, ()) for c in components)

    async def known_ids(self, site: str, prefix: str) -> set[str]:
        """The devices of `site` the registry has whose id starts with `prefix`
        (a transmission device's points)."""
        if site not in self._known:
            rows = await self._pages({"site": site})
            self._known[site] = {r["id"] for r in rows}
        return {device_id for device_id in self._known[site] if device_id.startswith(prefix)}

    async def _site_zones(self) -> dict[str, str]:
        """site -> IANA time zone (GET /api/v1/sites, all pages)."""
        out: dict[str, str] = {}
        cursor: str | None = None
        while True:
            query: dict[str, Any] = {"limit": PAGE}
            if cursor:
                query["cursor"] = cursor
            page = await self._get("/api/v1/sites", query)
            for item in page["items"]:
                if item.get("timezone"):
                    out[str(item["site"])] = str(item["timezone"])
            cursor = page.get("next_cursor")
            if not cursor:
                return out

    async def lookup(self, address: str) -> Uitd | None:
        """The transmission device registered with this address, or None."""
        now = time.monotonic()
        age = now - self._loaded_at
        if age >= DIRECTORY_TTL_S or (address not in self._by_address and age >= MISS_RELOAD_S):
            await self.reload(unless_since=now)
        return self._by_address.get(address)

    async def ensure(self, components: Sequence[Component]) -> None:
        """Register the components the registry does not have yet (never overwrites
        one it has: an admin may have set its floor, zone and thresholds). Requests
        that arrive together are registered in one POST (a gateway restart makes a
        thousand devices report their points at once)."""
        missing = [c for c in components if c.id not in self._known.get(c.site, ())]
        if not missing:
            return
        for c in missing:
            self._pending[c.id] = c
        if self._batch is None:
            self._batch = asyncio.get_running_loop().create_future()
            task = asyncio.create_task(self._flush(self._batch), name="gateway-register")
            self._flushing.add(task)
            task.add_done_callback(self._flushing.discard)
        await asyncio.shield(self._batch)
        refused = [self._refused[c.id] for c in missing if c.id in self._refused]
        if refused:
            raise RegistrationRefused(refused[0])

    async def _flush(self, done: asyncio.Future[None]) -> None:
        try:
            async with self._register:
                await asyncio.sleep(0)  # let the connections that are ready join in
                pending, self._pending = self._pending, {}
                if self._batch is done:
                    self._batch = None
                await self._post(list(pending.values()))
        except Exception as exc:
            if not done.done():
                done.set_exception(exc)
        else:
            if not done.done():
                done.set_result(None)
        finally:
            if self._batch is done:
                self._batch = None

    async def _send(self, components: list[Component]) -> httpx.Response:
        try:
            return await self._http.post(
                "/api/v1/devices",
                params={"only_new": "true"},  # what the registry has, an admin may have set
                json=[c.body() for c in components],
            )
        except httpx.HTTPError as exc:
            raise DirectoryUnavailable(f"API unreachable: {exc}") from exc

    async def _post(self, components: list[Component]) -> None:
        for site in {c.site for c in components}:
            if site not in self._known:
                rows = await self._pages({"site": site})
                self._known[site] = {r["id"] for r in rows}
        missing = [c for c in components if c.id not in self._known[c.site]]
        if not missing:
            return
        response = await self._send(missing)
        if response.status_code in (400, 409, 422):
            # One bad component must not cost the others: find it, one by one.
            for c in missing:
                one = await self._send([c])
                if one.status_code in (400, 409, 422):
                    self._refused[c.id] = (
                        f"registering {c.id}: HTTP {one.status_code} {one.text[:300]}"
                    )
                elif one.status_code not in (200, 201):
                    raise DirectoryUnavailable(f"registering {c.id}: HTTP {one.status_code}")
                else:
                    self._known[c.site].add(c.id)
            await asyncio.sleep(REGISTRY_SETTLE_S)
            return
        if response.status_code not in (200, 201):
            raise DirectoryUnavailable(
                f"registering {len(missing)} component(s): HTTP {response.status_code} "
                f"{response.text[:300]}"
            )
        for c in missing:
            self._known[c.site].add(c.id)
        log.info("registered %d component(s): %s", len(missing), [c.id for c in missing][:5])
        await asyncio.sleep(REGISTRY_SETTLE_S)
