"""The load generator drives a real orchestrator (or a cluster on a real etcd) and
reports what its agents saw."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from tools.loadgen import ADMIN_KEY, LoadConfig, LoadGenerator, OrchestratorProcess
from tools.loadgen._agent import RoomFields
from tools.loadgen._cluster import OrchestratorCluster, base_url, watch_takeover
from tools.loadgen._http import http_load, request_bytes


def test_loadgen_runs_twenty_agents_against_a_port_zero_orchestrator_without_errors() -> None:
    with OrchestratorProcess(heartbeat_ms=250) as orch:
        assert orch.port > 0
        config = LoadConfig(url=orch.agent_url, agents=20, rooms=5, processes=1)
        with LoadGenerator(config) as load:
            assert load.wait_joined(timeout=10) == 20
            assert orch.wait_instances(20, timeout=5, rooms=100)
            load.set(churn_per_s=10.0)
            load.reset()
            time.sleep(3.0)
            report = load.report()
            stats = orch.stats()
    assert report.error_count == 0, report.errors
    assert report.polls > 0
    assert report.replies_hash > 0 and report.replies_full > 0
    assert report.evicted() == 0 and report.kicked() == 0
    assert stats["instances"] == 20 and stats["stale"] == {}


@pytest.mark.parametrize("deltas", [True, False])
def test_loadgen_agents_answer_with_deltas_as_the_real_agent_does_and_stay_in_sync(
    deltas: bool,
) -> None:
    """Stand-in agents answer a poll carrying their last reply's hash with a delta (or,
    with ``deltas=False``, a full reply, as an older agent); either way the orchestrator's
    read model ends with every room the agents hold, and rejects nothing."""
    with OrchestratorProcess(heartbeat_ms=200) as orch:
        config = LoadConfig(url=orch.agent_url, agents=10, rooms=8, processes=1, deltas=deltas)
        with LoadGenerator(config) as load:
            assert load.wait_joined(timeout=10) == 10
            assert orch.wait_instances(10, timeout=5, rooms=80)
            load.reset()
            load.set(churn_per_s=40.0, replace_per_s=20.0, add_rooms=3)
            time.sleep(1.2)
            load.set(churn_per_s=0.0, replace_per_s=0.0)
            time.sleep(0.6)  # every agent polled again (heartbeat 200 ms) since its last change
            report = load.report()
            stats = orch.stats()
    assert report.error_count == 0, report.errors
    assert report.replies_full > 0
    assert (report.replies_delta > 0) is deltas
    assert report.rooms == 110 and stats["rooms"] == report.rooms
    assert not [kind for kind in stats.get("warnings", {}) if "reject" in kind or "drop" in kind]
    assert report.evicted() == 0 and report.kicked() == 0


def test_loadgen_agents_follow_the_new_leader_after_the_leader_is_killed() -> None:
    """Agents given every node's URL find the leader through a standby's hint, and come
    back to the next leader after a SIGKILL; the takeover watcher sees each step."""
    with OrchestratorCluster(
        2, heartbeat_ms=250, lease_ms=2000, extra=["--settle-ms", "5000"]
    ) as cluster:
        leader = cluster.wait_leader(timeout=30)
        urls = cluster.agent_urls
        if leader is cluster.nodes[0]:  # dial the standby first: it must send them on
            urls = urls[::-1]
        config = LoadConfig(url=urls, agents=20, rooms=2, processes=1)
        with LoadGenerator(config) as load:
            assert load.wait_joined(timeout=20) == 20
            assert leader.wait_instances(20, timeout=10)
            assert cluster.wait_recorded(20, timeout=10) == 20
            started = time.monotonic()
            leader.proc.kill()
            survivors = [base_url(node) for node in cluster.live]
            times = asyncio.run(watch_takeover(survivors, 20, started, timeout=40))
            report = load.report()
    assert times.leader is not None and times.all_back is not None, times.summary()
    assert times.generated_create is not None and times.explicit_create is not None
    assert times.leader <= times.all_back and times.instances == 20
    assert report.error_count == 0, report.errors
    assert report.dial_failures["upgrade refused: HTTP 503"] >= 20  # the standby's hints


def _call(port: int, method: str, path: str, body: bytes = b"") -> tuple[int, Any]:
    replies: list[tuple[int, bytes]] = []
    headers = {"Authorization": f"Bearer {ADMIN_KEY}", "Content-Type": "application/json"}
    raw = request_bytes(method, path, headers=headers, body=body)
    asyncio.run(
        http_load(
            "127.0.0.1",
            port,
            lambda _: raw,
            concurrency=1,
            count=1,
            keep_body=True,
            on_response=lambda status, data: replies.append((status, data)),
        )
    )
    status, data = replies[0]
    return status, json.loads(data)


def test_loadgen_rooms_report_seats_and_metadata_and_take_reservations() -> None:
    """Every room, preloaded or created by a seat request, reports its seats and its own
    metadata text; reservations count against the seats and end with a DELETE."""
    with OrchestratorProcess(heartbeat_ms=250) as orch:
        config = LoadConfig(
            url=orch.agent_url,
            agents=2,
            rooms=2,
            processes=1,
            room_max_connections=8,
            room_metadata={"mode": "ranked", "teams": 2},
        )
        with LoadGenerator(config) as load:
            assert load.wait_joined(timeout=10) == 2
            assert orch.wait_instances(2, timeout=5, rooms=4)
            status, listed = _call(orch.port, "GET", "/v1/rooms")
            assert status == 200
            rooms = {room["id"]: room for room in listed["data"]}
            assert len(rooms) == 4
            for room_id, room in rooms.items():
                assert room["maxConnections"] == 8
                assert room["metadata"] == {"mode": "ranked", "room": room_id, "teams": 2}
            # the fullest room: 1 connection (the second room of an agent), lower id first
            status, grant = _call(orch.port, "POST", "/v1/seats", b'{"type":"match","seats":7}')
            assert status == 200, grant
            room_id = grant["data"]["room"]["id"]
            assert rooms[room_id]["connections"] == 1
            assert grant["data"]["room"]["reservedSeats"] == 7
            # no room has 8 free seats now but the empty ones: then a created one
            for _ in range(2):
                status, grant = _call(orch.port, "POST", "/v1/seats", b'{"type":"match","seats":8}')
                assert status == 200, grant
            body = b'{"type":"match","seats":8,"create":{"options":{"mode":"ranked"}}}'
            status, created = _call(orch.port, "POST", "/v1/seats", body)
            assert status == 201 and created["data"]["created"], created
            new_id = created["data"]["room"]["id"]
            reservation = created["data"]["reservation"]["id"]
            # the ack lists the room; its seats and metadata come with the next snapshot
            deadline = time.monotonic() + 5
            status, room = _call(orch.port, "GET", f"/v1/rooms/{new_id}")
            while room["data"]["maxConnections"] is None and time.monotonic() < deadline:
                time.sleep(0.05)
                status, room = _call(orch.port, "GET", f"/v1/rooms/{new_id}")
            assert status == 200
            assert room["data"]["maxConnections"] == 8
            assert room["data"]["metadata"]["room"] == new_id
            assert room["data"]["reservedSeats"] == 8
            status, _ = _call(orch.port, "DELETE", f"/v1/seats/{reservation}")
            assert status == 200
            status, room = _call(orch.port, "GET", f"/v1/rooms/{new_id}")
            assert room["data"]["reservedSeats"] == 0
            report = load.report()
    assert report.error_count == 0, report.errors
    assert report.kicked() == 0


def test_room_fields_give_each_room_its_own_metadata_text_or_one_shared_text() -> None:
    unique = RoomFields(16, {"teams": 2, "mode": "ranked"})
    shared = RoomFields(16, {"teams": 2, "mode": "ranked"}, unique=False)
    assert unique.metadata("r1") == '{"mode":"ranked","room":"r1","teams":2}'
    assert unique.metadata("r2") == '{"mode":"ranked","room":"r2","teams":2}'
    assert shared.metadata("r1") == shared.metadata("r2") == '{"mode":"ranked","teams":2}'
    assert RoomFields(16, None).metadata("r1") == ""


@pytest.mark.parametrize("grpc_aio", [False, True], ids=["raw-http2", "grpc-aio"])
def test_stream_consumers_read_every_event_over_sse_and_watch_events(grpc_aio: bool) -> None:
    """The bench's consumer process reads WatchEvents off raw HTTP/2 (or with grpc.aio's
    client) and SSE: every stream counts every room event the orchestrator emitted, and
    the stamped creates give delivery delays."""
    from tools.bench import consumers, settled_reports
    from tools.loadgen._streams import StreamsConfig

    with OrchestratorProcess(heartbeat_ms=200, grpc=True, extra=["--count-events"]) as orch:
        assert orch.grpc_port
        config = LoadConfig(url=orch.agent_url, agents=4, rooms=3, processes=1)
        streams = StreamsConfig(
            host="127.0.0.1",
            port=orch.port,
            sse=2,
            grpc_port=orch.grpc_port,
            grpc=2,
            admin_key=ADMIN_KEY,
            grpc_aio=grpc_aio,
        )
        with LoadGenerator(config) as load, consumers(streams) as watch:
            assert load.wait_joined(timeout=10) == 4
            watch.wait_open(4, timeout=10)
            watch.report(reset=True)
            orch.reset()
            load.set(replace_per_s=40.0)
            time.sleep(1.0)
            load.set(replace_per_s=0.0)
            time.sleep(0.6)
            (report,) = settled_reports(watch, quiet_s=0.5, limit_s=5.0)
            emitted = orch.stats()["events"]
    creates = emitted.get("room:create", 0)
    assert creates > 10
    assert report["errors"] == [] and report["ended"] == 0
    for counts in report["sse"] + report["grpc"]:
        assert counts.get("room:create", 0) == creates
        assert counts.get("room:destroy", 0) == emitted.get("room:destroy", 0)
    assert report["latency"]["count"] >= 4 * creates


def test_the_sse_consumer_counts_frames_by_type_and_times_each_stamped_create() -> None:
    """Whole frames only: text that looks like a frame inside JSON data is not one."""
    from collections import Counter

    from tools.loadgen._histogram import Histogram
    from tools.loadgen._streams import account

    block = (
        b'\n\nevent: room:create\ndata: {"id":"x5-a-1","note":"event: room:create\\n"}\n\n'
        b"event: sync\ndata: {}\n\n: ping\n\nevent: instance:stale\ndata: {}\n\n"
        b'event: room:create\ndata: {"id":"x5-a-2"}\n\n'
        b'event: room:create\ndata: {"id":"x7-b-1"}\n\n'
        b'event: room:destroy\ndata: {"id":"x1-a-9"}'
    )
    counts: Counter[str] = Counter()
    latency = Histogram()
    account(block, counts, latency)
    assert counts == {"room:create": 3, "room:destroy": 1, "sync": 1, "instance:stale": 1}
    assert latency.count == 3
