"""Create, destroy, drain, undrain over REST; every fleet error code REST can produce."""

from __future__ import annotations

import asyncio
import json

import pytest
from rivalis.fleet.v3 import agent_pb2

from fleet_server import Placement
from tests.support.clients import Reply
from tests.support.raw_agent import RawRoom
from tests.support.waits import wait_for

from .support import Calls, Gateway, running_gateway


async def test_post_rooms_creates_with_exactly_the_request_and_answers_201(
    gw: Gateway, create_calls: Calls
) -> None:
    agent = await gw.agent(endpoint_url="wss://eu1.example")
    body = {"type": "match", "roomId": "m-42", "placement": {"strategy": "most-loaded"}}
    reply = await gw.post("/v1/rooms", json=body)
    assert reply.status == 201
    assert reply.data == {
        "id": "m-42",
        "type": "match",
        "connections": 0,
        "instanceId": agent.instance_id,
        "endpointUrl": "wss://eu1.example",
        "local": False,
        "metadata": {},
        "maxConnections": None,
        "locked": False,
        "reservedSeats": 0,
    }
    assert create_calls == [
        (
            ("match",),
            {"room_id": "m-42", "placement": Placement(strategy="most-loaded"), "options": None},
        )
    ]
    assert (await gw.get("/v1/rooms/m-42")).data == reply.data


async def test_post_rooms_reads_null_as_absent_and_generates_an_id(
    gw: Gateway, create_calls: Calls
) -> None:
    agent = await gw.agent(labels={"region": "eu"})
    reply = await gw.post("/v1/rooms", json={"type": "match", "roomId": None, "placement": None})
    assert reply.status == 201 and reply.data["id"].startswith("r_")
    pinned = {
        "type": "match",
        "placement": {
            "instanceId": agent.instance_id,
            "processUid": None,
            "strategy": None,
            "labels": {"region": "eu"},
            "force": True,
        },
    }
    assert (await gw.post("/v1/rooms", json=pinned)).status == 201
    assert create_calls[0] == (("match",), {"room_id": None, "placement": None, "options": None})
    assert create_calls[1][1]["placement"] == Placement(
        instance_id=agent.instance_id, labels={"region": "eu"}, force=True
    )


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b'{"roomId": "x"}', "application/json"),
        (b'{"type": ""}', "application/json"),
        (b'{"type": 5}', "application/json"),
        (b"{not json", "application/json"),
        (b"", "application/json"),
        (b"[]", "application/json"),
        (b'"match"', "application/json"),
        (b'{"type": "match", "extra": 1}', "application/json"),
        (b'{"type": "match", "roomId": "has space"}', "application/json"),
        (b'{"type": "match", "roomId": "has/slash"}', "application/json"),
        (b'{"type": "match", "roomId": "has~tilde"}', "application/json"),
        (b'{"type": "match", "roomId": "' + b"a" * 65 + b'"}', "application/json"),
        (b'{"type": "match", "roomId": 7}', "application/json"),
        (b'{"type": "match", "placement": []}', "application/json"),
        (b'{"type": "match", "placement": {"zone": "eu"}}', "application/json"),
        (b'{"type": "match", "placement": {"strategy": "fastest"}}', "application/json"),
        (
            b'{"type": "match", "placement": {"instanceId": "a", "processUid": "b"}}',
            "application/json",
        ),
        (b'{"type": "match", "placement": {"instanceId": ""}}', "application/json"),
        (b'{"type": "match", "placement": {"labels": {"a": 1}}}', "application/json"),
        (b'{"type": "match", "placement": {"force": "yes"}}', "application/json"),
        (b'{"type": NaN}', "application/json"),
        (b"[" * 5000 + b"]" * 5000, "application/json"),
        (b"\xff\xfe", "application/json"),
        (b'{"type": "match"}', "text/plain"),
        (b'{"type": "match"}', "application/x-www-form-urlencoded"),
    ],
)
async def test_bad_create_bodies_are_400_and_never_reach_create_room(
    gw: Gateway, create_calls: Calls, body: bytes, content_type: str
) -> None:
    reply = await gw.post("/v1/rooms", data=body, headers={"Content-Type": content_type})
    assert (reply.status, reply.cause) == (400, "VALIDATION")
    assert create_calls == []


async def test_delete_drain_and_undrain_answer_200_and_reach_the_agent(gw: Gateway) -> None:
    agent = await gw.agent()
    assert (await gw.post("/v1/rooms", json={"type": "match", "roomId": "m1"})).status == 201
    deleted = await gw.delete("/v1/rooms/m1")
    assert (deleted.status, deleted.json) == (200, {"status": "OK"})
    assert (await gw.get("/v1/rooms/m1")).cause == "ROOM_NOT_FOUND"

    drained = await gw.post(f"/v1/instances/{agent.instance_id}/drain")
    assert (drained.status, drained.json) == (200, {"status": "OK"})
    undrained = await gw.post(f"/v1/instances/{agent.instance_id}/undrain")
    assert (undrained.status, undrained.json) == (200, {"status": "OK"})
    assert [c.op for c in agent.commands] == ["create", "destroy", "drain", "undrain"]


async def expect(reply: Reply, status: int, cause: str) -> None:
    assert (reply.status, reply.cause) == (status, cause), reply.body


async def test_placement_and_lookup_failures_map_to_their_codes(gw: Gateway) -> None:
    active = await gw.agent()
    draining = await gw.agent(status="draining")
    await expect(await gw.post("/v1/rooms", json={"type": "chess"}), 409, "NO_CANDIDATE")
    await expect(
        await gw.post("/v1/rooms", json={"type": "match", "placement": {"instanceId": "i_x"}}),
        404,
        "INSTANCE_NOT_FOUND",
    )
    await expect(
        await gw.post("/v1/rooms", json={"type": "match", "placement": {"processUid": "p_x"}}),
        404,
        "INSTANCE_NOT_FOUND",
    )
    pin_draining = {"type": "match", "placement": {"instanceId": draining.instance_id}}
    await expect(await gw.post("/v1/rooms", json=pin_draining), 409, "INSTANCE_DRAINING")
    assert (await gw.post("/v1/rooms", json={"type": "match", "roomId": "dup"})).status == 201
    await expect(
        await gw.post("/v1/rooms", json={"type": "match", "roomId": "dup"}), 409, "ROOM_EXISTS"
    )
    await expect(await gw.delete("/v1/rooms/nope"), 404, "ROOM_NOT_FOUND")
    await expect(await gw.post("/v1/instances/i_x/drain"), 404, "INSTANCE_NOT_FOUND")
    await expect(await gw.post("/v1/instances/i_x/undrain"), 404, "INSTANCE_NOT_FOUND")
    assert active.commands[0].room_id == "dup"


async def test_agent_refusals_are_502_command_failed(gw: Gateway) -> None:
    agent = await gw.agent(rooms={"r1": RawRoom("match")})

    async def refuse(cmd: agent_pb2.Command) -> agent_pb2.Ack:
        return agent_pb2.Ack(cmd_id=cmd.cmd_id, ok=False, error="boom")

    agent.on_command = refuse
    for reply in (
        await gw.post("/v1/rooms", json={"type": "match"}),
        await gw.delete("/v1/rooms/r1"),
        await gw.post(f"/v1/instances/{agent.instance_id}/drain"),
        await gw.post(f"/v1/instances/{agent.instance_id}/undrain"),
    ):
        await expect(reply, 502, "COMMAND_FAILED")
        assert b"boom" not in reply.body


async def test_a_silent_agent_gives_504_and_a_same_id_retry_gives_409() -> None:
    async with running_gateway(command_timeout_ms=200) as gw:
        agent = await gw.agent()
        agent.auto_ack = False
        await expect(
            await gw.post("/v1/rooms", json={"type": "match", "roomId": "late"}),
            504,
            "COMMAND_TIMEOUT",
        )
        await expect(
            await gw.post("/v1/rooms", json={"type": "match", "roomId": "late"}),
            409,
            "ROOM_EXISTS",
        )
        await expect(
            await gw.post(f"/v1/instances/{agent.instance_id}/drain"), 504, "COMMAND_TIMEOUT"
        )
        assert [c.room_id for c in agent.commands if c.op == "create"] == ["late"]


async def test_the_33rd_command_is_429_busy_and_a_vanishing_agent_fails_the_rest_502(
    gw: Gateway,
) -> None:
    agent = await gw.agent()
    agent.auto_ack = False
    pending = [
        asyncio.ensure_future(gw.post("/v1/rooms", json={"type": "match", "roomId": f"b{i}"}))
        for i in range(32)
    ]
    await wait_for(lambda: len(agent.commands) == 32)
    await expect(await gw.post("/v1/rooms", json={"type": "match"}), 429, "INSTANCE_BUSY")
    await expect(await gw.post(f"/v1/instances/{agent.instance_id}/drain"), 429, "INSTANCE_BUSY")
    await agent.close()
    for reply in await asyncio.gather(*pending):
        await expect(reply, 502, "INSTANCE_DISCONNECTED")
    assert len(agent.commands) == 32


async def test_an_unexpected_exception_is_500_internal_and_logged(
    gw: Gateway, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def explode(room_id: str) -> None:
        raise RuntimeError("marker-5b1c internal detail")

    monkeypatch.setattr(gw.orch.fleet, "get_room", explode)
    reply = await gw.get("/v1/rooms/r1", headers={"Accept": "text/html"})
    await expect(reply, 500, "INTERNAL")
    assert reply.headers["Content-Type"] == "application/json; charset=utf-8"
    assert b"marker" not in reply.body and b"Traceback" not in reply.body
    records = [r for r in caplog.records if r.name == "fleet.http" and r.levelname == "ERROR"]
    assert len(records) == 1
    assert (
        "method=GET" in records[0].getMessage() and "path=/v1/rooms/r1" in records[0].getMessage()
    )
    assert records[0].exc_info is not None


async def test_control_answers_carry_no_data_key(gw: Gateway) -> None:
    agent = await gw.agent()
    reply = await gw.post(f"/v1/instances/{agent.instance_id}/drain")
    assert json.loads(reply.body) == {"status": "OK"}
    assert reply.headers["Content-Type"] == "application/json; charset=utf-8"
