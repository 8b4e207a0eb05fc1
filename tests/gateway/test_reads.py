"""Read routes: envelope and shapes, filters, paging, ETag, raw room ids (SPEC §10)."""

from __future__ import annotations

from typing import Any

from tests.support.raw_agent import RawRoom
from tests.support.waits import wait_for

from .support import Gateway


def rooms(*ids: str, type: str = "match") -> dict[str, RawRoom]:
    return {room_id: RawRoom(type) for room_id in ids}


async def test_read_routes_answer_the_envelope_with_camel_case_shapes(gw: Gateway) -> None:
    agent = await gw.agent(
        name="eu1",
        endpoint_url="wss://eu1.example",
        labels={"region": "eu"},
        room_types=["match", "lobby"],
        rooms={"r1": RawRoom("match", 3)},
        max_rooms=10,
    )
    stats = await gw.get("/v1/stats")
    assert stats.status == 200
    assert stats.data == {
        "instances": 1,
        "rooms": 1,
        "connections": 3,
        "roomTypes": ["lobby", "match"],
        "stateHash": gw.orch.fleet.state_hash,
    }

    listed = (await gw.get("/v1/instances")).json
    assert listed["count"] == 1 and set(listed) == {"status", "data", "count"}
    instance = listed["data"][0]
    assert set(instance) == {
        "id",
        "name",
        "processUid",
        "endpointUrl",
        "labels",
        "roomTypes",
        "rooms",
        "connections",
        "capacity",
        "autoCreate",
        "status",
        "lastSyncAt",
        "agentVersion",
        "protocolVersion",
    }
    assert instance["id"] == agent.instance_id and instance["processUid"] == agent.process_uid
    assert instance["capacity"] == {"maxConnections": None, "maxRooms": 10}
    assert instance["status"] == "active" and instance["autoCreate"] is True

    one = await gw.get(f"/v1/instances/{agent.instance_id}")
    assert one.data["id"] == agent.instance_id and "ETag" not in one.headers
    room = {
        "id": "r1",
        "type": "match",
        "connections": 3,
        "instanceId": agent.instance_id,
        "endpointUrl": "wss://eu1.example",
        "local": True,
        "metadata": {},
        "maxConnections": None,
        "locked": False,
        "reservedSeats": 0,
    }
    own = (await gw.get(f"/v1/instances/{agent.instance_id}/rooms")).json
    assert own == {"status": "OK", "data": [room], "count": 1}
    assert (await gw.get("/v1/rooms")).json == {"status": "OK", "data": [room], "count": 1}
    assert (await gw.get("/v1/rooms/r1")).data == room


async def test_unknown_instance_and_room_are_not_found(gw: Gateway) -> None:
    for path in ("/v1/instances/i_nope", "/v1/instances/i_nope/rooms"):
        reply = await gw.get(path)
        assert (reply.status, reply.cause) == (404, "INSTANCE_NOT_FOUND"), path
    reply = await gw.get("/v1/rooms/nope")
    assert (reply.status, reply.cause) == (404, "ROOM_NOT_FOUND")


async def test_room_filters_by_type_instance_and_labels(gw: Gateway) -> None:
    eu = await gw.agent(
        labels={"region": "eu", "tier": "premium", "zone": "a:b"},
        room_types=["match", "lobby"],
        rooms={**rooms("m1", "m2"), **rooms("l1", type="lobby")},
    )
    await gw.agent(labels={"region": "us"}, rooms=rooms("m3"))

    async def count(query: str) -> int:
        reply = await gw.get(f"/v1/rooms?{query}")
        assert reply.status == 200, (query, reply.body)
        body = reply.json
        assert body["count"] == len(body["data"])
        return int(body["count"])

    assert await count("") == 4
    assert await count("type=match") == 3
    assert await count("type=lobby") == 1
    assert await count(f"instanceId={eu.instance_id}") == 3
    assert await count(f"instanceId={eu.instance_id}&type=match") == 2
    assert await count("instanceId=i_unknown") == 0
    assert await count("label=region:eu&label=tier:premium") == 3
    assert await count("label=region:us") == 1
    assert await count("label=region:eu&label=tier:basic") == 0
    assert await count("label=region:us&label=region:eu") == 3  # later duplicates win
    assert await count("label=zone:a:b") == 3  # split at the first colon
    assert await count("type=&instanceId=") == 4  # empty means not given
    assert await count("unknown=1") == 4
    for bad in (
        "label=regioneu",
        "label=:eu",
        "type=match&type=lobby",
        "instanceId=a&instanceId=b",
    ):
        reply = await gw.get(f"/v1/rooms?{bad}")
        assert (reply.status, reply.cause) == (400, "VALIDATION"), bad


async def _page_ids(gw: Gateway, path: str, limit: int) -> list[list[str]]:
    pages: list[list[str]] = []
    cursor: str | None = None
    while True:
        query = f"limit={limit}" + (f"&cursor={cursor}" if cursor else "")
        body = (await gw.get(f"{path}?{query}")).json
        pages.append([row["id"] for row in body["data"]])
        cursor = body.get("nextCursor")
        if cursor is None:
            return pages


async def test_paging_walks_every_row_once_with_the_total_count(gw: Gateway) -> None:
    agent = await gw.agent(rooms=rooms("r1", "r2", "r3", "r4", "r5"))
    first = (await gw.get("/v1/rooms?limit=2")).json
    assert [r["id"] for r in first["data"]] == ["r1", "r2"]
    assert first["count"] == 5 and isinstance(first["nextCursor"], str)
    assert await _page_ids(gw, "/v1/rooms", 2) == [["r1", "r2"], ["r3", "r4"], ["r5"]]
    assert await _page_ids(gw, f"/v1/instances/{agent.instance_id}/rooms", 3) == [
        ["r1", "r2", "r3"],
        ["r4", "r5"],
    ]
    everything = (await gw.get("/v1/rooms")).json
    assert everything["count"] == 5 and "nextCursor" not in everything
    last = (await gw.get("/v1/rooms?limit=5")).json
    assert len(last["data"]) == 5 and "nextCursor" not in last


async def test_paging_instances_in_join_order(gw: Gateway) -> None:
    joined = [(await gw.agent()).instance_id for _ in range(3)]
    assert await _page_ids(gw, "/v1/instances", 2) == [joined[:2], joined[2:]]
    assert (await gw.get("/v1/instances?limit=2")).json["count"] == 3


async def test_a_page_starts_after_the_last_row_even_when_rows_changed(gw: Gateway) -> None:
    await gw.agent(rooms=rooms("r1", "r2", "r3", "r4", "r5"))
    first = (await gw.get("/v1/rooms?limit=2")).json
    assert [r["id"] for r in first["data"]] == ["r1", "r2"]
    for gone in ("r1", "r2", "r3"):
        assert (await gw.delete(f"/v1/rooms/{gone}")).status == 200
    second = (await gw.get(f"/v1/rooms?limit=2&cursor={first['nextCursor']}")).json
    assert [r["id"] for r in second["data"]] == ["r4", "r5"]
    assert second["count"] == 2 and "nextCursor" not in second


async def test_bad_paging_parameters_are_validation_errors(gw: Gateway) -> None:
    await gw.agent(rooms=rooms("r1", "r2", "r3"))
    cursor = (await gw.get("/v1/rooms?limit=1")).json["nextCursor"]
    bad = [
        "limit=0",
        "limit=10001",
        "limit=abc",
        "limit=-1",
        "limit=1.5",
        "limit=",
        "limit=1&limit=2",
        "limit=1&cursor=not-a-cursor!",
        "limit=1&cursor=e30",  # base64url of {}
        f"cursor={cursor}",
    ]
    for path in ("/v1/rooms", "/v1/instances"):
        for query in bad:
            reply = await gw.get(f"{path}?{query}")
            assert (reply.status, reply.cause) == (400, "VALIDATION"), (path, query)
    assert (await gw.get("/v1/rooms?limit=10000")).status == 200
    assert (await gw.get("/v1/rooms?limit=1")).status == 200


async def test_etag_and_if_none_match_on_stats_instances_and_rooms(gw: Gateway) -> None:
    agent = await gw.agent(rooms=rooms("r1"))
    tag = f'W/"{gw.orch.fleet.state_hash}"'
    for path in ("/v1/stats", "/v1/instances", "/v1/rooms", "/v1/rooms?type=match&limit=1"):
        reply = await gw.get(path)
        assert reply.status == 200 and reply.headers["ETag"] == tag, path
        for match in (tag, "*", f'"other", {tag}', f'W/"nope",{tag}'):
            cached = await gw.get(path, headers={"If-None-Match": match})
            assert cached.status == 304 and cached.body == b"", (path, match)
            assert cached.headers["ETag"] == tag
        for miss in ('W/"0000000000000000"', tag.removeprefix("W/")):
            assert (await gw.get(path, headers={"If-None-Match": miss})).status == 200
    for path in (f"/v1/instances/{agent.instance_id}", f"/v1/instances/{agent.instance_id}/rooms"):
        assert "ETag" not in (await gw.get(path)).headers, path


async def test_etag_survives_hash_only_replies_and_moves_with_a_new_room(gw: Gateway) -> None:
    agent = await gw.agent(rooms=rooms("r1"))
    tag = (await gw.get("/v1/stats")).headers["ETag"]
    replies = len(agent.states_sent)
    await wait_for(lambda: sum(not s.full for s in agent.states_sent[replies:]) >= 3)
    assert (await gw.get("/v1/stats", headers={"If-None-Match": tag})).status == 304
    assert (await gw.post("/v1/rooms", json={"type": "match"})).status == 201
    fresh = await gw.get("/v1/stats", headers={"If-None-Match": tag})
    assert fresh.status == 200 and fresh.headers["ETag"] != tag
    assert fresh.data["rooms"] == 2


def _delete_ack(agent: Any) -> list[tuple[str, str]]:
    return [(c.op, c.room_id) for c in agent.commands]


async def test_room_ids_are_taken_verbatim_from_the_raw_path(gw: Gateway) -> None:
    first = await gw.agent(rooms={"café": RawRoom("match"), "a/b": RawRoom("match")})
    second = await gw.agent(process_uid="p_x", rooms={"a/b": RawRoom("match")})
    listed = sorted(r["id"] for r in (await gw.get("/v1/rooms")).data)
    assert listed == ["a%2Fb", "caf%C3%A9", "p_x~a%2Fb"]

    cafe = await gw.get("/v1/rooms/caf%C3%A9")
    assert cafe.data["id"] == "caf%C3%A9" and cafe.data["instanceId"] == first.instance_id
    shared = await gw.get("/v1/rooms/p_x~a%2Fb")
    assert shared.data["instanceId"] == second.instance_id
    assert (await gw.get("/v1/rooms/caf%c3%a9")).cause == "ROOM_NOT_FOUND"  # not decoded
    assert (await gw.get("/v1/rooms/a/b")).cause == "NOT_FOUND"  # no such route

    assert (await gw.delete("/v1/rooms/p_x~a%2Fb")).status == 200
    assert _delete_ack(second) == [("destroy", "a/b")]
    assert (await gw.delete("/v1/rooms/caf%C3%A9")).status == 200
    assert _delete_ack(first) == [("destroy", "café")]
    remaining = [r["id"] for r in (await gw.get("/v1/rooms")).data]
    assert remaining == ["a%2Fb"]
