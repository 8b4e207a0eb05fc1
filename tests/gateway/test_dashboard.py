"""The dashboard's files over HTTP (CONTRACT §12, docs/tokens-and-metrics.md §3): served to
browsers at ``/`` and ``/dashboard`` with a strict CSP, agents unaffected, our own files
only (the browser test in tests/dashboard drives the page itself)."""

from __future__ import annotations

import html.parser
import tomllib
from importlib import resources
from pathlib import Path

import pytest

from gateway._dashboard import ASSETS, CSP

from .support import Gateway, running_gateway

HTML = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
ROOT = Path(__file__).resolve().parents[2]


class _Page(html.parser.HTMLParser):
    """What a page pulls in and anything inline."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.inline: list[str] = []
        self._tag = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._tag = tag
        values = dict(attrs)
        if tag == "style":
            self.inline.append("<style>")
        for name, value in attrs:
            if name.startswith("on") or name == "style":
                self.inline.append(f"{tag} {name}")
            if name in ("src", "href") and value is not None:
                self.urls.append(value)
        if tag == "script" and not values.get("src"):
            self.inline.append("<script> without src")

    def handle_data(self, data: str) -> None:
        if self._tag == "script" and data.strip():
            self.inline.append("script text")


def assert_hardened(headers: object) -> None:
    assert headers["Content-Security-Policy"] == CSP  # type: ignore[index]
    assert headers["X-Content-Type-Options"] == "nosniff"  # type: ignore[index]
    assert headers["Referrer-Policy"] == "no-referrer"  # type: ignore[index]


async def test_a_browser_gets_the_page_at_the_root_and_at_dashboard(gw: Gateway) -> None:
    for path in ("/", "/dashboard"):
        reply = await gw.get(path, key=None, headers=HTML)
        assert reply.status == 200, path
        assert reply.headers["Content-Type"] == "text/html; charset=utf-8"
        assert_hardened(reply.headers)
        assert b"<title>rivalis-fleet</title>" in reply.body
    plain = await gw.get("/dashboard", key=None)
    assert plain.status == 200  # /dashboard has no other meaning


async def test_the_root_still_answers_agents_and_other_clients_as_before(gw: Gateway) -> None:
    reply = await gw.get("/", key=None)
    assert (reply.status, reply.cause) == (400, "VALIDATION")
    upgrade = {**HTML, "Upgrade": "websocket", "Connection": "Upgrade"}
    reply = await gw.get("/", key=None, headers=upgrade)  # an upgrade without a key
    assert (reply.status, reply.cause) == (401, "UNAUTHORIZED")
    agent = await gw.agent(name="eu1")  # the WebSocket upgrade still joins
    assert (await gw.get(f"/v1/instances/{agent.instance_id}")).status == 200


async def test_the_page_pulls_in_only_our_files_and_nothing_inline(gw: Gateway) -> None:
    page = _Page()
    page.feed((await gw.get("/dashboard", key=None)).body.decode())
    assert page.inline == []
    assert sorted(page.urls) == sorted(f"/dashboard/{name}" for name in ASSETS)
    for name, content_type in ASSETS.items():
        reply = await gw.get(f"/dashboard/{name}", key=None)
        assert reply.status == 200
        assert reply.headers["Content-Type"].split(";")[0] == content_type
        assert_hardened(reply.headers)
        text = reply.body.decode()
        assert "http://" not in text.replace("http://www.w3.org/2000/svg", "")
        assert "https://" not in text and "//cdn" not in text
    script = (await gw.get("/dashboard/dashboard.js", key=None)).body.decode()
    assert "innerHTML" not in script and "eval(" not in script
    assert "sessionStorage" in script and "localStorage" not in script


async def test_without_the_api_there_is_no_dashboard() -> None:
    async with running_gateway(api=False) as gw:
        reply = await gw.get("/", key=None, headers=HTML)
        assert (reply.status, reply.cause) == (400, "VALIDATION")
        assert (await gw.get("/dashboard", key=None, headers=HTML)).status == 404


def test_the_files_ship_as_package_data() -> None:
    folder = resources.files("gateway").joinpath("dashboard")
    for name in ("index.html", *ASSETS):
        assert folder.joinpath(name).is_file(), name
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "dashboard/*" in project["tool"]["setuptools"]["package-data"]["gateway"]


@pytest.mark.parametrize("accept", ["application/json", "*/*", "text/plain"])
async def test_only_an_html_accept_makes_the_root_a_page(gw: Gateway, accept: str) -> None:
    reply = await gw.get("/", key=None, headers={"Accept": accept})
    assert (reply.status, reply.cause) == (400, "VALIDATION")
