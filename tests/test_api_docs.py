"""`/docs`, `/redoc` and `/` work with no internet: every asset is served locally."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest

from tests.test_api_support import live_server

pytestmark = pytest.mark.integration

_ASSET_RE = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']""")
# Swagger UI's bundle alone is over a megabyte: a stub page would be far smaller.
MIN_BUNDLE_BYTES = 100_000


@pytest.fixture(scope="module")
def api_url(database_url: str, migration: object) -> Iterator[str]:
    with live_server(database_url, public_docs=True) as url:
        yield url


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_load_only_local_assets(api_url: str, page: str) -> None:
    r = httpx.get(api_url + page)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assets = _ASSET_RE.findall(r.text)
    scripts = [a for a in assets if a.endswith(".js")]
    assert scripts, r.text
    for asset in assets:
        assert asset.startswith("/"), f"{page} loads {asset} from elsewhere"
        got = httpx.get(api_url + asset)
        assert got.status_code == 200, asset
    for script in scripts:
        assert len(httpx.get(api_url + script).content) > MIN_BUNDLE_BYTES, script
    # The page reads the schema from this server.
    assert "/openapi.json" in r.text


def test_root_says_where_to_go(api_url: str) -> None:
    r = httpx.get(api_url + "/")
    assert r.status_code == 200
    links = r.json()["links"]
    assert {"docs", "redoc", "openapi", "api", "health"} <= links.keys()
    for name in ("docs", "redoc", "openapi", "health"):
        assert httpx.get(api_url + links[name]).status_code == 200, name
    for path in links["api"].values():
        if path.endswith("/stream"):
            continue
        # Exists, and asks for a token.
        assert httpx.get(api_url + path).status_code == 401, path


def test_without_public_docs_root_still_answers(database_url: str, migration: object) -> None:
    with live_server(database_url) as url:
        r = httpx.get(url + "/")
        assert r.status_code == 200
        links = r.json()["links"]
        assert "docs" not in links
        assert "redoc" not in links
        assert httpx.get(url + "/docs").status_code == 404
        assert httpx.get(url + links["openapi"]).status_code == 401  # the schema needs a token
