"""The dashboard (CONTRACT §12, docs/tokens-and-metrics.md §3): static files of our own.

``GET /dashboard``, and ``GET /`` from a browser, answer the page; its script,
stylesheet and icon live next to it under ``gateway/dashboard/`` and ship in the wheel.
``GET /`` is also the agent endpoint: :func:`mount_dashboard` registers one handler for
it that serves the page only to a browser (``Accept`` names ``text/html``, no
``Upgrade`` header) and hands every other request to the agent endpoint unchanged.

Every file goes out with a strict Content Security Policy (scripts, styles, images and
connections from this origin only; no inline code), ``nosniff`` and no referrer. The page
holds no data and needs no credential: it calls the REST API with a token.
"""

from __future__ import annotations

import functools
from importlib import resources
from typing import Final

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler

from ._middleware import GUARD

__all__ = ["ASSETS", "CSP", "PAGE_PATHS", "is_browser", "mount_dashboard"]

CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_FOLDER: Final = "dashboard"
PAGE: Final = "index.html"
ASSETS: Final = {  # file -> content type, each served at /dashboard/<file>
    "dashboard.js": "text/javascript",
    "dashboard.css": "text/css",
    "favicon.svg": "image/svg+xml",
}
PAGE_PATHS: Final = ("/", "/dashboard")
_HEADERS: Final = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    hdrs.CACHE_CONTROL: "no-cache",
}


@functools.cache
def _file(name: str) -> bytes:
    return resources.files(__package__).joinpath(_FOLDER, name).read_bytes()


def _serve(name: str, content_type: str) -> web.Response:
    return web.Response(
        body=_file(name), content_type=content_type, charset="utf-8", headers=_HEADERS
    )


def is_browser(request: web.BaseRequest) -> bool:
    """A browser asking for a page: ``Accept`` names ``text/html`` and it is no upgrade."""
    headers = request.headers
    return hdrs.UPGRADE not in headers and "text/html" in headers.get(hdrs.ACCEPT, "")


def mount_dashboard(app: web.Application, *, agents: Handler) -> None:
    """The page at ``/dashboard`` and, for browsers, at ``/`` (``agents`` answers every
    other request to ``/``), and its assets under ``/dashboard/``, behind the app's guard
    (mount the health routes first: they make it)."""

    async def page(request: web.Request) -> web.StreamResponse:
        return _serve(PAGE, "text/html")

    async def root(request: web.Request) -> web.StreamResponse:
        if is_browser(request):
            return _serve(PAGE, "text/html")
        return await agents(request)

    guard = app[GUARD]
    guard.add(app, "GET", "/", root, head=True)
    guard.add(app, "GET", "/dashboard", page, head=True)
    for name, content_type in ASSETS.items():

        async def asset(
            request: web.Request, name: str = name, content_type: str = content_type
        ) -> web.StreamResponse:
            return _serve(name, content_type)

        guard.add(app, "GET", f"/{_FOLDER}/{name}", asset, head=True)
