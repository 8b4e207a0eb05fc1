"""/healthz and /readyz at the root: no auth, never throttled, up with the API off (SPEC §10)."""

from __future__ import annotations

import aiohttp
from aiohttp.test_utils import TestServer

from fleet_server import Orchestrator
from tests.support.clients import Reply
from tests.support.keys import ADMIN, KEY

from .support import Gateway, running_gateway


async def test_healthz_and_readyz_answer_ok_without_a_key(gw: Gateway) -> None:
    for path in ("/healthz", "/readyz"):
        reply = await gw.get(path, key=None)
        assert reply.status == 200
        assert reply.json == {"status": "OK"}
        assert reply.headers["Content-Type"] == "application/json; charset=utf-8"


async def test_health_routes_ignore_the_throttle(gw: Gateway) -> None:
    for _ in range(11):
        await gw.get("/v1/stats", key="wrong-key-0123456789")
    assert (await gw.get("/v1/stats")).cause == "AUTH_THROTTLED"
    assert (await gw.get("/healthz", key="wrong-key-0123456789")).status == 200
    assert (await gw.get("/readyz", key=None)).status == 200


async def test_readyz_is_503_until_the_orchestrator_listens() -> None:
    orch = Orchestrator(host="127.0.0.1", port=0, agent_key=KEY, admin_key=ADMIN)
    async with TestServer(orch.build_app()) as server, aiohttp.ClientSession() as session:
        async with session.get(server.make_url("/readyz")) as response:
            assert response.status == 503
            assert await response.json() == {"status": "rejected", "cause": "NOT_READY"}
        async with session.get(server.make_url("/healthz")) as response:
            assert response.status == 200


async def test_readyz_is_503_during_shutdown() -> None:
    seen: list[Reply] = []
    async with running_gateway() as gw:
        end_streams = gw.orch._end_streams

        async def probe() -> None:  # runs inside shutdown, while HTTP still serves
            seen.append(await gw.get("/readyz", key=None))
            if end_streams is not None:
                await end_streams()

        gw.orch._end_streams = probe
        await gw.orch.shutdown()
    assert [r.status for r in seen] == [503]
    assert seen[0].cause == "NOT_READY"


async def test_with_the_api_off_only_health_and_the_agent_endpoint_are_served() -> None:
    async with running_gateway(api=False) as gw:
        assert (await gw.get("/healthz", key=None)).json == {"status": "OK"}
        assert (await gw.get("/readyz", key=None)).json == {"status": "OK"}
        for path in ("/v1/stats", "/v1/openapi.json", "/v1/rooms", "/v1/events"):
            reply = await gw.get(path)
            assert reply.status == 404 and reply.cause == "NOT_FOUND", path
        reply = await gw.post("/healthz")
        assert reply.status == 405 and reply.cause == "METHOD_NOT_ALLOWED"
        assert reply.headers["Allow"] == "GET"
        agent = await gw.agent()
        assert gw.orch.fleet.get_instance(agent.instance_id) is not None
