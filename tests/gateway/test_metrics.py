"""GET /metrics (CONTRACT §12, docs/tokens-and-metrics.md §2): the exposition parses, the
counters move at the edges, route labels are templates, cardinality stays flat, and each
orchestrator keeps its own registry."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from fleet_server import Webhook
from fleet_server._metrics import MAX_ROOM_TYPES, OTHER_TYPE
from tests.support.keys import ADMIN, KEY
from tests.support.raw_agent import RawRoom
from tests.support.waits import wait_for

from .support import Gateway, running_gateway
from .test_openapi import live_routes

CONTRACT_METRICS = {
    "fleet_instances": "gauge",
    "fleet_rooms": "gauge",
    "fleet_connections": "gauge",
    "fleet_reserved_seats": "gauge",
    "fleet_poll_rtt_seconds": "histogram",
    "fleet_commands": "counter",
    "fleet_command_duration_seconds": "histogram",
    "fleet_agent_kicks": "counter",
    "fleet_evictions": "counter",
    "fleet_http_requests": "counter",
    "fleet_auth_failures": "counter",
    "fleet_event_streams": "gauge",
    "fleet_events_dropped": "counter",
    "fleet_event_loop_lag_seconds": "gauge",
    "fleet_leader": "gauge",
    "fleet_build_info": "gauge",
    "fleet_capacity_free_room_slots": "gauge",
    "fleet_capacity_free_connections": "gauge",
}

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(gw: Gateway, key: str | None = None) -> tuple[str, Samples]:
    reply = await gw.get("/metrics", key=key)
    assert reply.status == 200, reply.body
    text = reply.body.decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[sample.name, frozenset(sample.labels.items())] = sample.value
    return text, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def series(samples: Samples, names: Iterable[str]) -> int:
    wanted = set(names)
    return sum(1 for name, _ in samples if name in wanted)


async def test_the_exposition_parses_and_has_every_contract_metric(gw: Gateway) -> None:
    reply = await gw.get("/metrics", key=None)
    assert reply.status == 200
    assert reply.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    families = {f.name: f.type for f in text_string_to_metric_families(reply.body.decode())}
    for name, kind in CONTRACT_METRICS.items():
        assert families.get(name) == kind, name
    _, samples = await scrape(gw)
    assert value(samples, "fleet_leader") == 1
    assert value(samples, "fleet_build_info", version="0.1.0") == 1
    for status in ("active", "draining", "stale"):
        assert ("fleet_instances", frozenset({("status", status)})) in samples
    for kind in ("sse", "grpc", "webhook"):
        assert ("fleet_events_dropped_total", frozenset({("kind", kind)})) in samples


async def test_gauges_follow_the_read_model(gw: Gateway) -> None:
    await gw.agent(
        name="eu1",
        rooms={"r1": RawRoom("match", 3, max_connections=10), "r2": RawRoom("lobby", 4)},
        room_types=["match", "lobby"],
    )
    drained = await gw.agent(name="eu2", status="draining")
    reserved = await gw.post("/v1/seats", json={"type": "match", "seats": 2})
    assert reserved.status == 200
    async with gw.session.get(gw.url("/v1/events"), headers=gw.auth()) as stream:
        assert stream.status == 200
        _, samples = await scrape(gw)
        assert value(samples, "fleet_event_streams", kind="sse") == 1
    assert value(samples, "fleet_instances", status="active") == 1
    assert value(samples, "fleet_instances", status="draining") == 1
    assert value(samples, "fleet_rooms", type="match") == 1
    assert value(samples, "fleet_rooms", type="lobby") == 1
    assert value(samples, "fleet_connections") == 7
    assert value(samples, "fleet_reserved_seats") == 2
    assert value(samples, "fleet_poll_rtt_seconds_count") > 0
    drained.auto_reply = False  # two missed polls: stale
    await wait_for(lambda: gw.orch.fleet.get_instance(drained.instance_id) is None, 10)
    _, samples = await scrape(gw)
    assert value(samples, "fleet_evictions_total") == 1


async def test_each_webhook_counts_as_an_event_stream() -> None:
    hook = Webhook("http://127.0.0.1:9/hook", ["room:create"], "webhook-secret-0123456789")
    async with running_gateway(webhooks=[hook]) as gw:
        _, samples = await scrape(gw)
    assert value(samples, "fleet_event_streams", kind="webhook") == 1
    assert value(samples, "fleet_events_dropped_total", kind="webhook") == 0


async def test_capacity_gauges_group_by_the_capacity_label() -> None:
    async with running_gateway(capacity_label="zone") as gw:
        await gw.agent(name="a", labels={"zone": "a"}, max_rooms=5, max_connections=100)
        await gw.agent(name="b", labels={"zone": "a"}, rooms={"r1": RawRoom("match", 7)})
        await gw.agent(name="c", max_rooms=3, rooms={"r2": RawRoom("match", 2)})
        _, samples = await scrape(gw)
    slots, connections = "fleet_capacity_free_room_slots", "fleet_capacity_free_connections"
    assert value(samples, slots, group="a") == float("inf")  # b has no maxRooms
    assert value(samples, connections, group="a") == float("inf")
    assert value(samples, slots, group="") == 2
    assert value(samples, connections, group="") == float("inf")


async def test_counters_move_with_commands_kicks_and_auth_failures() -> None:
    async with running_gateway(command_timeout_ms=300) as gw:
        agent = await gw.agent(name="eu1")
        assert (await gw.post("/v1/rooms", json={"type": "match", "roomId": "m1"})).status == 201
        assert (await gw.post("/v1/rooms", json={"type": "match", "roomId": "m2"})).status == 201
        assert (await gw.post(f"/v1/instances/{agent.instance_id}/drain")).status == 200
        agent.auto_ack = False
        reply = await gw.post(f"/v1/instances/{agent.instance_id}/undrain")
        assert (reply.status, reply.cause) == (504, "COMMAND_TIMEOUT")
        assert (await gw.get("/v1/stats", key="not-the-admin-key-0123")).status == 401
        with pytest.raises(aiohttp.WSServerHandshakeError):  # a wrong agent key
            await gw.session.ws_connect(gw.agent_url, protocols=("rivalis-fleet.v1", "nope"))
        kicked = await gw.agent(name="eu2")
        await kicked.send_text("hello")
        await kicked.wait_closed()
        _, samples = await scrape(gw)
    assert value(samples, "fleet_commands_total", op="create", outcome="ok") == 2
    assert value(samples, "fleet_commands_total", op="drain", outcome="ok") == 1
    assert value(samples, "fleet_commands_total", op="undrain", outcome="command_timeout") == 1
    assert value(samples, "fleet_command_duration_seconds_count", op="create") == 2
    assert value(samples, "fleet_command_duration_seconds_bucket", op="undrain", le="+Inf") == 1
    assert value(samples, "fleet_command_duration_seconds_sum", op="undrain") >= 0.29
    assert value(samples, "fleet_auth_failures_total", audience="admin") == 1
    assert value(samples, "fleet_auth_failures_total", audience="agent") == 1
    assert value(samples, "fleet_agent_kicks_total", reason="malformed") == 1


async def test_http_requests_are_counted_by_route_template(gw: Gateway) -> None:
    await gw.get("/v1/rooms/abc")
    await gw.get("/v1/rooms/caf%C3%A9")
    await gw.get("/v1/instances/i_1/rooms")
    await gw.get("/nowhere/at/all")
    await gw.request("PUT", "/v1/stats")
    await gw.request("PROPFIND", "/v1/stats")  # a method the API never names
    await gw.get("/v1/stats", key=None)
    _, samples = await scrape(gw)
    http = "fleet_http_requests_total"
    assert value(samples, http, route="/v1/rooms/{roomId}", code="404") == 2
    assert value(samples, http, route="/v1/instances/{id}/rooms", code="404") == 1
    assert value(samples, http, route="unmatched", code="404") == 1
    assert value(samples, http, route="unmatched", code="405") == 2  # PUT, and PROPFIND
    assert value(samples, http, route="/v1/stats", code="401") == 1
    assert all(set(dict(labels)) == {"route", "code"} for name, labels in samples if name == http)
    routes = {dict(labels)["route"] for name, labels in samples if name == http}
    templates = {path for _, path in live_routes()}
    assert routes <= templates | {"unmatched"}, routes - templates


async def test_cardinality_stays_flat_after_thousands_of_ids_and_bad_paths(gw: Gateway) -> None:
    many_types = {f"r{i}": RawRoom(f"type-{i:03d}", 1) for i in range(MAX_ROOM_TYPES + 50)}
    room_types = sorted({r.type for r in many_types.values()})
    await gw.agent(name="eu1", rooms=many_types, room_types=room_types)
    for path in ("/v1/rooms/warm", "/v1/instances/warm", "/warm/up", "/v1/instances/warm/rooms"):
        await gw.get(path)
    await scrape(gw)  # the scrape counts itself from the next one on
    _, before = await scrape(gw)
    paths = [
        path
        for i in range(500)
        for path in (
            f"/v1/rooms/room-{i}",
            f"/v1/instances/inst-{i}",
            f"/v1/instances/inst-{i}/rooms",
            f"/bad/{i}/path",
        )
    ]
    for start in range(0, len(paths), 50):
        await asyncio.gather(*(gw.get(path) for path in paths[start : start + 50]))
    text, after = await scrape(gw)
    assert set(after) == set(before)  # 2,000 requests with distinct ids: no new series
    rooms = [labels for name, labels in after if name == "fleet_rooms"]
    assert len(rooms) == MAX_ROOM_TYPES + 1
    assert value(after, "fleet_rooms", type=OTHER_TYPE) == 50
    assert "room-1" not in text and "inst-1" not in text and "/bad/" not in text


async def test_metrics_auth_asks_for_the_admin_key_or_a_token() -> None:
    async with running_gateway(metrics_auth=True) as gw:
        reply = await gw.get("/metrics", key=None)
        assert (reply.status, reply.cause) == (401, "UNAUTHORIZED")
        assert (await gw.get("/metrics", key=KEY)).status == 401
        assert (await gw.get("/metrics", key=ADMIN)).status == 200
        token = (await gw.post("/v1/tokens", json={"scope": "read"})).data["token"]
        assert (await gw.get("/metrics", key=token)).status == 200


async def test_metrics_are_served_by_a_standby_and_without_the_api(
    gw: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gw.orch._cluster, "leads", lambda: False)
    _, samples = await scrape(gw)
    assert value(samples, "fleet_leader") == 0
    async with running_gateway(api=False) as agents_only:
        _, samples = await scrape(agents_only)
        assert value(samples, "fleet_leader") == 1


async def test_each_orchestrator_has_its_own_registry() -> None:
    async with running_gateway() as first, running_gateway() as second:
        assert first.orch.metrics.registry is not second.orch.metrics.registry
        await first.agent(name="eu1")
        for _ in range(3):
            await first.get("/v1/stats")
        _, one = await scrape(first)
        _, two = await scrape(second)
    stats = {"route": "/v1/stats", "code": "200"}
    assert value(one, "fleet_http_requests_total", **stats) == 3
    assert value(two, "fleet_http_requests_total", **stats) == 0
    assert value(one, "fleet_instances", status="active") == 1
    assert value(two, "fleet_instances", status="active") == 0


async def test_with_metrics_off_only_the_gauges_remain() -> None:
    async with running_gateway(metrics=False) as gw:
        await gw.agent(name="eu1", rooms={"r1": RawRoom("match", 2)})
        await gw.get("/v1/stats")
        await asyncio.sleep(0.3)  # a few polls
        _, samples = await scrape(gw)
    assert value(samples, "fleet_instances", status="active") == 1
    assert value(samples, "fleet_connections") == 2
    assert value(samples, "fleet_poll_rtt_seconds_count") == 0
    assert not any(name == "fleet_http_requests_total" for name, _ in samples)


def test_the_contract_names_match_the_documented_table() -> None:
    doc = (Path(__file__).parents[2] / "docs" / "tokens-and-metrics.md").read_text()
    for name, kind in CONTRACT_METRICS.items():
        shown = f"{name}_total" if kind == "counter" else name
        assert f"| `{shown}` | {kind} |" in doc, shown
