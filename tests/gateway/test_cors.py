"""CORS: off by default; an allow-list or ``*``; preflight before auth (SPEC §10 "CORS")."""

from __future__ import annotations

from fleet_server import Orchestrator
from tests.support.keys import ADMIN, KEY

from .support import Gateway, SseReader, running_gateway

LISTED = "https://dash.example"
PREFLIGHT = {
    "Origin": LISTED,
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "authorization, content-type",
}


async def test_cors_is_off_by_default(gw: Gateway) -> None:
    reply = await gw.get("/v1/stats", headers={"Origin": LISTED})
    assert reply.status == 200
    assert not [h for h in reply.headers if h.lower().startswith("access-control-")]
    preflight = await gw.request("OPTIONS", "/v1/rooms", key=None, headers=PREFLIGHT)
    assert (preflight.status, preflight.cause) == (404, "NOT_FOUND")


async def test_a_listed_origin_is_echoed_on_every_response() -> None:
    async with running_gateway(cors_origins=[LISTED, "https://other.example"]) as gw:
        origin = {"Origin": LISTED}
        for reply in (
            await gw.get("/v1/stats", headers=origin),
            await gw.get("/v1/stats", key=None, headers=origin),
            await gw.get("/v1/nope", headers=origin),
            await gw.get("/healthz", key=None, headers=origin),
            await gw.post("/v1/rooms", json={"type": "x"}, headers=origin),
        ):
            assert reply.headers["Access-Control-Allow-Origin"] == LISTED, reply.status
            assert reply.headers["Access-Control-Expose-Headers"] == "ETag"
            assert "Origin" in reply.headers["Vary"]
        unlisted = await gw.get("/v1/stats", headers={"Origin": "https://evil.example"})
        assert unlisted.status == 200
        assert "Access-Control-Allow-Origin" not in unlisted.headers
        assert "Access-Control-Allow-Origin" not in (await gw.get("/v1/stats")).headers


async def test_a_preflight_is_204_without_auth_and_lists_the_methods() -> None:
    async with running_gateway(cors_origins=[LISTED]) as gw:
        reply = await gw.request("OPTIONS", "/v1/rooms", key=None, headers=PREFLIGHT)
        assert reply.status == 204 and reply.body == b""
        assert reply.headers["Access-Control-Allow-Origin"] == LISTED
        methods = {m.strip() for m in reply.headers["Access-Control-Allow-Methods"].split(",")}
        assert {"GET", "POST", "DELETE"} <= methods
        assert reply.headers["Access-Control-Allow-Headers"] == "authorization, content-type"
        evil = {**PREFLIGHT, "Origin": "https://evil.example"}
        refused = await gw.request("OPTIONS", "/v1/rooms", key=None, headers=evil)
        assert refused.status == 204
        assert not [h for h in refused.headers if h.lower().startswith("access-control-")]
        not_preflight = await gw.request("OPTIONS", "/v1/rooms", key=None)
        assert (not_preflight.status, not_preflight.cause) == (404, "NOT_FOUND")


async def test_a_wildcard_allows_any_origin() -> None:
    async with running_gateway(cors_origins=["*"]) as gw:
        reply = await gw.get("/v1/rooms", headers={"Origin": "https://anything.example"})
        assert reply.headers["Access-Control-Allow-Origin"] == "*"
        assert reply.headers["Access-Control-Expose-Headers"] == "ETag"
        assert "Access-Control-Allow-Origin" not in (await gw.get("/v1/rooms")).headers


async def test_event_streams_carry_cors_headers() -> None:
    async with running_gateway(cors_origins=[LISTED]) as gw:
        headers = {**gw.auth(), "Origin": LISTED}
        async with gw.session.get(gw.url("/v1/events"), headers=headers) as stream:
            assert stream.status == 200
            assert stream.headers["Access-Control-Allow-Origin"] == LISTED
            assert await SseReader(stream).frame() == [": connected"]


async def test_with_cors_off_nothing_is_installed_and_options_is_never_routed() -> None:
    for api in (True, False):
        async with running_gateway(api=api) as gw:
            for path in ("/v1/stats", "/v1/rooms/r1", "/healthz", "/", "/nope"):
                for headers in (PREFLIGHT, {}):
                    reply = await gw.request("OPTIONS", path, key=None, headers=headers)
                    assert (reply.status, reply.cause) == (404, "NOT_FOUND"), (api, path)
                    assert "Allow" not in reply.headers
                    assert not [h for h in reply.headers if h.lower().startswith("access-")]
            reply = await gw.get("/healthz", key=None, headers={"Origin": LISTED})
            assert reply.status == 200 and "Vary" not in reply.headers
            assert not [h for h in reply.headers if h.lower().startswith("access-control-")]
    app = Orchestrator(host="127.0.0.1", port=0, agent_key=KEY, admin_key=ADMIN).build_app()
    assert len(app.middlewares) == 0 and len(app.on_response_prepare) == 0


async def test_cors_on_adds_one_response_hook_and_no_middleware() -> None:
    orch = Orchestrator(
        host="127.0.0.1", port=0, agent_key=KEY, admin_key=ADMIN, api=True, cors_origins=[LISTED]
    )
    app = orch.build_app()
    assert len(app.middlewares) == 0 and len(app.on_response_prepare) == 1
    async with running_gateway(cors_origins=[LISTED]) as gw:
        reply = await gw.request("OPTIONS", "/healthz", key=None, headers=PREFLIGHT)
        assert reply.status == 204
        assert reply.headers["Access-Control-Allow-Origin"] == LISTED
        unknown = await gw.request("OPTIONS", "/nope", key=None, headers={"Origin": LISTED})
        assert (unknown.status, unknown.cause) == (404, "NOT_FOUND")
        assert unknown.headers["Access-Control-Allow-Origin"] == LISTED
