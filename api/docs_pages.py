"""`/docs` (Swagger UI), `/redoc` and `/`, served without a CDN.

The JavaScript and CSS come from the installed `fastapi-offline` package, so
the pages render on a machine with no internet access (or a slow or
filtered one) exactly as on any other.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

ASSETS_URL = "/static/docs"


def _assets_dir() -> Path:
    import fastapi_offline

    return Path(fastapi_offline.__file__).parent / "static"


def install(app: FastAPI, *, public_docs: bool, openapi_url: str = "/openapi.json") -> None:
    """`/` always; with `public_docs`, the assets, `/docs` and `/redoc` (all without auth).
    Without, the schema needs a token (a browser page cannot send one), so no pages."""
    _root(app, public_docs=public_docs, openapi_url=openapi_url)
    if not public_docs:
        return
    app.mount(ASSETS_URL, StaticFiles(directory=_assets_dir()), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{app.title} API",
            swagger_js_url=f"{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS_URL}/favicon.png",
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url=openapi_url,
            title=f"{app.title} API",
            redoc_js_url=f"{ASSETS_URL}/redoc.standalone.js",
            redoc_favicon_url=f"{ASSETS_URL}/favicon.png",
            with_google_fonts=False,
        )


def _root(app: FastAPI, *, public_docs: bool, openapi_url: str) -> None:
    pages = {"docs": "/docs", "redoc": "/redoc"} if public_docs else {}

    @app.get("/", include_in_schema=False)
    async def root() -> JSONResponse:
        return JSONResponse(
            {
                "name": app.title,
                "summary": app.summary,
                "links": {
                    **pages,
                    "openapi": openapi_url,
                    "api": {
                        "devices": "/api/v1/devices",
                        "alarms": "/api/v1/alarms",
                        "alarm_stream": "/api/v1/alarms/stream",
                        "sites": "/api/v1/sites",
                        "rejects": "/api/v1/rejects",
                        "tokens": "/api/v1/tokens",
                    },
                    "health": "/health",
                    "metrics": "/metrics",
                },
                "auth": (
                    "every endpoint but /health, this page, /docs, /redoc and the OpenAPI "
                    "schema needs Authorization: Bearer <token>"
                    if public_docs
                    else "every endpoint but /health and this page needs Authorization: "
                    "Bearer <token> (the OpenAPI schema too; /docs and /redoc are off)"
                ),
            }
        )
