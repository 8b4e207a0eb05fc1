"""The dashboard in headless Chromium against a live orchestrator with real agents
(CONTRACT §12): sign in once, the instances and a room created over REST show up within
2 s, drain/undrain and create work from the page, no console error, and the screenshot
in docs/dashboard.png is taken here.

The 2 s figures are measured and reported (``[figures] dashboard: …`` with ``-s``);
waits use generous deadlines so a busy machine fails only on the figures themselves.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path

import aiohttp
import pytest

from fleet_agent import Capacity, FleetAgent, RoomManager
from fleet_server import Orchestrator, Placement
from tests.support.agents import FleetAgents, RawAgents, define_rooms
from tests.support.browser import MISSING, Browser, headless_chromium, missing
from tests.support.figures import report
from tests.support.keys import ADMIN
from tests.support.orchestrators import agent_url, running_orchestrator
from tests.support.raw_agent import RawRoom
from tests.support.waits import wait_for

SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "dashboard.png"
SHOWN_WITHIN_S = 2.0
WAIT_S = 20.0  # deadlines of the waits; the figures above are what is checked


class Fleet:
    """The orchestrator, its agents and an admin HTTP client."""

    def __init__(self, orch: Orchestrator, session: aiohttp.ClientSession) -> None:
        self.orch = orch
        self.session = session
        self.base = f"http://127.0.0.1:{orch.port}"
        self.agents: dict[str, FleetAgent] = {}
        self.hosts: dict[str, RoomManager] = {}

    def instance_id(self, name: str) -> str:
        found = self.agents[name].instance_id
        assert found is not None
        return found

    async def post(self, path: str, body: object) -> tuple[int, object]:
        async with self.session.post(
            self.base + path, json=body, headers={"Authorization": f"Bearer {ADMIN}"}
        ) as reply:
            return reply.status, await reply.json()


@pytest.fixture
async def fleet() -> AsyncIterator[Fleet]:
    """Two real FleetAgents (eu1, us1) with rooms, and a raw agent (eu2) whose rooms report
    metadata, seats and a lock (the agent side of those is not this test's subject)."""
    async with (
        running_orchestrator(api=True, heartbeat_ms=250) as orch,
        FleetAgents(url=agent_url(orch.port)) as make,
        RawAgents(orch) as raw,
        aiohttp.ClientSession() as session,
    ):
        fleet = Fleet(orch, session)
        for name, region, capacity in (
            ("eu1", "eu", Capacity(max_rooms=20, max_connections=400)),
            ("us1", "us", Capacity(max_rooms=10)),
        ):
            host = define_rooms(RoomManager(), "match", "lobby")
            labels = {"region": region, "tier": "standard"}
            agent = make(host, name=name, labels=labels, capacity=capacity)
            await agent.connect()
            fleet.agents[name], fleet.hosts[name] = agent, host
        await raw.join(
            name="eu2",
            labels={"region": "eu", "tier": "premium"},
            room_types=["match", "lobby"],
            max_rooms=50,
            rooms={
                "ranked-dust-7": RawRoom(
                    "match", 6, "fleet", '{"map":"dust","mode":"ranked"}', max_connections=10
                ),
                "lobby-eu": RawRoom("lobby", 31, "local", '{"motd":"welcome"}', 64, locked=True),
            },
        )
        await wait_for(lambda: orch.fleet.stats.instances == 3, WAIT_S)
        for name, room_type, room_id, connections in (
            ("eu1", "match", "casual-1", 8),
            ("eu1", "lobby", "lobby-1", 23),
            ("us1", "match", "casual-2", 4),
        ):
            await orch.fleet.create_room(
                room_type, room_id=room_id, placement=Placement(instance_id=fleet.instance_id(name))
            )
            room = fleet.hosts[name].get(room_id)
            assert room is not None
            room.connections = connections
        status, _ = await fleet.post(
            "/v1/seats", {"type": "match", "seats": 2, "metadata": {"mode": "ranked"}}
        )
        assert status == 200
        yield fleet


async def shown_within(browser: Browser, css: str, started: float) -> float:
    """Seconds from ``started`` until an element matching ``css`` exists."""
    await wait_for(lambda: browser.texts(css), WAIT_S, step=0.02, message=f"{css} never shown")
    return time.monotonic() - started


async def status_of(browser: Browser, instance_id: str) -> list[str]:
    return await browser.texts(f'tr[data-id="{instance_id}"] .pill')


@pytest.mark.timeout(240)
async def test_the_dashboard_shows_the_fleet_live_and_acts_on_it(fleet: Fleet) -> None:
    if missing():
        pytest.fail(MISSING, pytrace=False)
    orch = fleet.orch
    async with headless_chromium() as browser:
        opened = time.monotonic()
        await browser.open(fleet.base + "/")
        page_load_s = time.monotonic() - opened
        # the form is shown by the page's script once it has run: wait for it
        await wait_for(lambda: browser.visible("#login-form"), WAIT_S, step=0.1)

        # sign in once: the key is traded for a token and forgotten
        await browser.type("#login-key", ADMIN)
        await browser.select("#login-scope", "admin")
        signed_in = time.monotonic()
        await browser.click("#login-form button[type=submit]")
        await wait_for(lambda: browser.texts("#instances tbody td.name"), WAIT_S, step=0.02)
        instances_s = time.monotonic() - signed_in
        await wait_for(lambda: _count(browser, "#instances tbody tr", 3), WAIT_S)
        stored = json.loads(await browser.script("return JSON.stringify(sessionStorage)"))
        assert ADMIN not in json.dumps(stored)
        assert list(stored) == ["rivalis-fleet.token"]
        assert json.loads(stored["rivalis-fleet.token"])["token"].startswith("at1.")
        assert await browser.script("return document.getElementById('login-key').value") == ""
        names = await browser.texts("#instances tbody td.name")
        assert sorted(n[:3] for n in names) == ["eu1", "eu2", "us1"]
        row = f'tr[data-id="{fleet.instance_id("eu1")}"] td'
        assert "2 / 20" in await browser.texts(row)

        # a room created over REST shows up
        created = time.monotonic()
        status, _ = await fleet.post(
            "/v1/rooms",
            {"type": "match", "roomId": "rest-1", "placement": {"labels": {"region": "us"}}},
        )
        assert status == 201
        rest_room_s = await shown_within(browser, 'tr[data-room="rest-1"]', created)
        metadata = await browser.texts('tr[data-room="ranked-dust-7"] td')
        assert "map=dust mode=ranked" in metadata and "6 / 10" in metadata and "2" in metadata
        assert "locked" in " ".join(await browser.texts('tr[data-room="lobby-eu"] td'))

        # drain and undrain from the page
        eu1 = fleet.instance_id("eu1")
        clicked = time.monotonic()
        await browser.click(f'button[data-instance="{eu1}"]')
        await wait_for(lambda: _equals(status_of(browser, eu1), ["draining"]), WAIT_S)
        drain_s = time.monotonic() - clicked
        assert fleet.agents["eu1"].status == "draining"
        await wait_for(lambda: _button(browser, eu1, "Undrain"), WAIT_S)
        await browser.click(f'button[data-instance="{eu1}"]')
        await wait_for(lambda: _equals(status_of(browser, eu1), ["active"]), WAIT_S)
        assert orch.fleet.get_instance(eu1).status == "active"  # type: ignore[union-attr]

        # create a room from the page
        await browser.select("#create-type", "lobby")
        await browser.type("#create-id", "page-1")
        await browser.type("#create-labels", "region=eu tier=standard")
        await browser.click("#create-room button[type=submit]")
        await wait_for(
            lambda: _contains(browser.texts("#create-message"), "Created page-1"), WAIT_S
        )
        room = orch.fleet.get_room("page-1")
        assert room is not None and room.instance_id == eu1

        # the live parts: events in the feed, both chart lines; some movement for the chart
        casual_1, casual_2 = fleet.hosts["eu1"].get("casual-1"), fleet.hosts["us1"].get("casual-2")
        assert casual_1 is not None and casual_2 is not None
        for step, connections in enumerate((14, 19, 27, 22, 30, 35, 28, 33)):
            casual_1.connections, casual_2.connections = connections, 4 + 3 * step
            if step == 2:
                await orch.fleet.create_room("match", room_id="burst-1")
            if step == 5:
                await orch.fleet.destroy_room("burst-1")
            await asyncio.sleep(0.8)
        us1 = fleet.instance_id("us1")  # one draining instance in the picture
        assert (await fleet.post(f"/v1/instances/{us1}/drain", {}))[0] == 200
        await wait_for(lambda: _equals(status_of(browser, us1), ["draining"]), WAIT_S)
        feed = await browser.texts("#feed .type")
        assert "room:create" in feed and "instance:join" not in feed  # joined before sign-in
        assert len(await browser.texts("#chart polyline")) == 2
        assert (await browser.texts("#live")) == ["live"]
        assert (await browser.texts("#stat-instances")) == ["3"]

        await browser.screenshot(SCREENSHOT)
        assert await browser.console_errors() == []

        # a reload keeps the session: no second prompt
        reloaded = time.monotonic()
        await browser.open(fleet.base + "/dashboard")
        assert not await browser.visible("#login-form")
        reload_s = await shown_within(browser, "#instances tbody td.name", reloaded)
        assert await browser.console_errors() == []

    report(
        "dashboard",
        page_load_s=page_load_s,
        instances_after_sign_in_s=instances_s,
        rest_room_on_page_s=rest_room_s,
        drain_on_page_s=drain_s,
        reload_to_instances_s=reload_s,
    )
    assert instances_s <= SHOWN_WITHIN_S, instances_s
    assert rest_room_s <= SHOWN_WITHIN_S, rest_room_s


async def test_a_read_token_shows_the_fleet_without_admin_controls(fleet: Fleet) -> None:
    if missing():
        pytest.fail(MISSING, pytrace=False)
    status, body = await fleet.post("/v1/tokens", {"scope": "read", "ttlS": 600})
    assert status == 201
    token = body["data"]["token"]  # type: ignore[index]
    async with headless_chromium(1280, 800) as browser:
        await browser.open(f"{fleet.base}/dashboard?token={token}")
        await wait_for(lambda: _count(browser, "#instances tbody tr", 3), WAIT_S)
        assert not await browser.visible("#login-form")
        assert await browser.script("return location.search") == ""  # taken out of the URL
        assert await browser.texts("button[data-instance]") == []
        assert not await browser.visible("#create-room")
        assert (await browser.texts("#session"))[0].startswith("read token")
        assert await browser.console_errors() == []


async def _count(browser: Browser, css: str, wanted: int) -> bool:
    return len(await browser.texts(css)) == wanted


async def _equals(texts: Awaitable[list[str]], wanted: list[str]) -> bool:
    return await texts == wanted


async def _contains(texts: Awaitable[list[str]], wanted: str) -> bool:
    return any(wanted in text for text in await texts)


async def _button(browser: Browser, instance_id: str, label: str) -> bool:
    return await browser.texts(f'button[data-instance="{instance_id}"]') == [label]
