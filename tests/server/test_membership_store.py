"""The membership store and settling (CONTRACT §9): a restarted orchestrator keeps the
ids its game servers may have, and explicit-id creates wait for those servers."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from pathlib import Path

import aiohttp
import grpc
import pytest
from rivalis.fleet.v1 import control_pb2 as pb

from fleet_server import ErrorCode, FleetError, Orchestrator
from fleet_server._agent_tokens import AgentTokenRecord
from fleet_server._membership import (
    MAX_SAVE_DELAY_S,
    SAVE_DELAY_S,
    FileStore,
    Membership,
    MembershipError,
    Recorder,
)
from fleet_server._orphans import OrphanHold
from tests.support.agents import RawAgents
from tests.support.clients import AUTH, Http, control_stub, grpc_cause
from tests.support.orchestrators import new_orchestrator
from tests.support.raw_agent import RawRoom
from tests.support.waits import wait_for

CUT = 1001


def _record(path: Path) -> dict[str, object]:
    data: dict[str, object] = json.loads(path.read_bytes())
    return data


# --- the record and the file ---------------------------------------------------------


def test_the_record_round_trips_through_its_json_form() -> None:
    record = Membership(
        processes={"p_a": 1_700_000_000_000, "p_b": 1_700_000_000_500},
        orphans=(OrphanHold("m-1", "p_a", 1_700_000_060_000),),
        saved_at=1_700_000_001_000,
        agent_tokens=(
            AgentTokenRecord(
                "agt_a", "gs-1", {"region": "eu"}, 1_700_000_000_000, 1_800_000_000_000
            ),
            AgentTokenRecord(
                "agt_b", None, {}, 1_700_000_000_001, 1_800_000_000_000, 1_700_000_000_900
            ),
        ),
    )
    assert Membership.from_json(record.to_json()) == record
    assert json.loads(record.to_json()) == {
        "version": 1,
        "savedAt": 1_700_000_001_000,
        "processes": {
            "p_a": {"lastSeenAt": 1_700_000_000_000},
            "p_b": {"lastSeenAt": 1_700_000_000_500},
        },
        "orphans": [{"id": "m-1", "processUid": "p_a", "expiresAt": 1_700_000_060_000}],
        "agentTokens": [
            {
                "id": "agt_a",
                "name": "gs-1",
                "labels": {"region": "eu"},
                "createdAt": 1_700_000_000_000,
                "expiresAt": 1_800_000_000_000,
                "revokedAt": None,
            },
            {
                "id": "agt_b",
                "name": None,
                "labels": {},
                "createdAt": 1_700_000_000_001,
                "expiresAt": 1_800_000_000_000,
                "revokedAt": 1_700_000_000_900,
            },
        ],
    }


def test_ids_that_need_escaping_are_written_as_json_strings() -> None:
    odd = ['p_"quoted"', "p_back\\slash", "p_é☃", "p_\u0001ctl", "p_\U0001f600"]
    record = Membership(
        processes={uid: 1_700_000_000_000 + n for n, uid in enumerate(odd)},
        orphans=tuple(OrphanHold(f"room-{uid}", uid, 1_700_000_060_000) for uid in odd),
        saved_at=7,
    )
    data = record.to_json()
    assert data.isascii()
    assert Membership.from_json(data) == record
    assert list(json.loads(data)["processes"]) == odd


async def test_writes_of_a_large_record_are_spaced_out_and_still_within_a_second() -> None:
    """Every write encodes the whole record on the event loop: 0.25 s apart for a
    small record, up to 0.75 s for 10,000 processes; a change is stored within 1 s."""
    saves: list[float] = []

    class Store:
        where = "memory"

        async def save(self, membership: Membership) -> bool:
            saves.append(time.monotonic())
            return True

        async def load(self) -> Membership | None:
            return None

    size = [0]
    recorder = Recorder(
        Store(), lambda: Membership(processes={f"p_{n}": 1 for n in range(size[0])})
    )
    assert recorder.delay_s == SAVE_DELAY_S == 0.25
    size[0] = 10_000
    started = time.monotonic()
    until = started + 2.0
    while time.monotonic() < until:  # a process joins every 20 ms, as after a takeover
        recorder.changed()
        await asyncio.sleep(0.02)
    await recorder.close(final=False)
    assert recorder.delay_s == MAX_SAVE_DELAY_S == 0.75
    assert saves[0] - started < 0.5  # the first write: a small record so far
    assert all(b - a >= 0.7 for a, b in itertools.pairwise(saves))
    assert 2 <= len(saves) <= 4  # 0.25 s apart, it would have been about 8


def test_a_record_written_before_agent_tokens_reads_as_none() -> None:
    old = b'{"version": 1, "savedAt": 5, "processes": {}, "orphans": []}'
    assert Membership.from_json(old) == Membership(saved_at=5)


@pytest.mark.parametrize(
    "data",
    [
        b"{not json",
        b"[]",
        b'{"version": 2, "savedAt": 0, "processes": {}, "orphans": []}',
        b'{"version": 1, "savedAt": "x", "processes": {}, "orphans": []}',
        b'{"version": 1, "savedAt": 0, "processes": {"p": {}}, "orphans": []}',
        b'{"version": 1, "savedAt": 0, "processes": {}, "orphans": [{"id": 3}]}',
        b'{"version": 1, "savedAt": 0, "processes": {}, "orphans": [], "agentTokens": {}}',
        b'{"version": 1, "savedAt": 0, "processes": {}, "orphans": [], "agentTokens": [{}]}',
        b'{"version": 1, "savedAt": 0, "processes": {}, "orphans": [],'
        b' "agentTokens": [{"id": "a", "labels": [], "createdAt": 1, "expiresAt": 2}]}',
    ],
)
def test_an_unreadable_record_is_a_membership_error(data: bytes) -> None:
    with pytest.raises(MembershipError):
        Membership.from_json(data)


async def test_the_file_store_replaces_the_file_whole(tmp_path: Path) -> None:
    path = tmp_path / "state" / "fleet.json"
    store = FileStore(path)
    assert await store.load() is None
    first = Membership(processes={"p_a": 1}, saved_at=1)
    second = Membership(processes={"p_b": 2}, saved_at=2)
    assert await store.save(first)
    assert await store.save(second)
    assert await store.load() == second
    assert sorted(p.name for p in path.parent.iterdir()) == ["fleet.json"]  # no .tmp left
    path.write_bytes(b"garbage")
    with pytest.raises(MembershipError):
        await store.load()


# --- an orchestrator keeping it --------------------------------------------------------


async def _started(tmp_path: Path, **options: object) -> Orchestrator:
    options.setdefault("state_path", tmp_path / "fleet.json")
    options.setdefault("heartbeat_ms", 100)
    orch = new_orchestrator(**options)
    await orch.listen()
    return orch


async def test_joined_processes_are_recorded_within_a_second_and_a_clean_leave_drops_one(
    tmp_path: Path,
) -> None:
    orch = await _started(tmp_path, api=False)
    path = tmp_path / "fleet.json"
    try:
        async with RawAgents(orch) as agents:
            a = await agents.join(name="a")
            b = await agents.join(name="b")
            want = {a.process_uid, b.process_uid}
            await wait_for(lambda: path.exists() and set(_processes(path)) == want, 3.0)
            await b.close()  # a clean leave
            await wait_for(lambda: set(_processes(path)) == {a.process_uid}, 3.0)
    finally:
        await orch.shutdown()


def _processes(path: Path) -> dict[str, object]:
    processes = _record(path)["processes"]
    assert isinstance(processes, dict)
    return processes


async def test_a_restart_keeps_every_id_and_settles_explicit_ids_only(tmp_path: Path) -> None:
    first = await _started(tmp_path, api=False)
    async with RawAgents(first) as agents:
        agent = await agents.join(rooms={"m-1": RawRoom("match", 2, origin="fleet")})
        await first.shutdown()  # SIGTERM: every instance torn down, the record written
    orphans = _record(tmp_path / "fleet.json")["orphans"]
    assert isinstance(orphans, list)
    assert [(o["id"], o["processUid"]) for o in orphans] == [("m-1", agent.process_uid)]
    second = await _started(tmp_path, api=False, settle_ms=60_000)
    try:
        assert "m-1" in second.fleet.orphans  # survived the restart
        assert not second.fleet.roster.settled
        async with RawAgents(second) as agents:
            await agents.join(name="newcomer")
            with pytest.raises(FleetError) as info:
                await second.fleet.create_room("match", room_id="m-2")
            assert info.value.code is ErrorCode.NOT_READY
            assert info.value.http_status == 503
            assert info.value.retry_after_s is not None and 1 <= info.value.retry_after_s <= 60
            generated = await second.fleet.create_room("match")  # generated ids never wait
            assert generated.id.startswith("r")
            # The recorded process comes back with its room: settled, the room is its own.
            back = await agents.join(
                process_uid=agent.process_uid,
                rooms={"m-1": RawRoom("match", 2, origin="fleet")},
            )
            assert second.fleet.roster.settled
            room = second.fleet.get_room("m-1")
            assert room is not None and room.instance_id == back.instance_id
            with pytest.raises(FleetError) as taken:
                await second.fleet.create_room("match", room_id="m-1")
            assert taken.value.code is ErrorCode.ROOM_EXISTS
            created = await second.fleet.create_room("match", room_id="m-2")
            assert created.id == "m-2"
    finally:
        await second.shutdown()


async def test_settling_ends_after_settle_ms_when_a_recorded_process_never_returns(
    tmp_path: Path,
) -> None:
    (tmp_path / "fleet.json").write_bytes(
        Membership(processes={"p_gone": int(time.time() * 1000)}).to_json()
    )
    orch = await _started(tmp_path, api=False, settle_ms=400)
    try:
        async with RawAgents(orch) as agents:
            await agents.join()
            assert not orch.fleet.roster.settled
            await wait_for(lambda: orch.fleet.roster.settled, 5.0)
            room = await orch.fleet.create_room("match", room_id="after-settle")
            assert room.id == "after-settle"
    finally:
        await orch.shutdown()


async def test_an_unreadable_record_makes_the_node_settle_for_the_whole_settle_ms(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "fleet.json").write_bytes(b"\x00garbage")
    orch = await _started(tmp_path, api=False, settle_ms=300)
    try:
        assert "unreadable" in caplog.text
        assert not orch.fleet.roster.settled
        await wait_for(lambda: orch.fleet.roster.settled, 5.0)
        await wait_for(
            lambda: Membership.from_json((tmp_path / "fleet.json").read_bytes()) is not None, 3.0
        )
    finally:
        await orch.shutdown()


async def test_without_a_store_nothing_waits_after_a_start() -> None:
    orch = new_orchestrator(api=False)
    await orch.listen()
    try:
        assert orch.fleet.roster.settled
    finally:
        await orch.shutdown()


# --- what API callers see while settling ------------------------------------------------


async def test_rest_and_grpc_answer_not_ready_with_retry_after_while_settling(
    tmp_path: Path,
) -> None:
    (tmp_path / "fleet.json").write_bytes(Membership(processes={"p_gone": 1}).to_json())
    orch = await _started(tmp_path, api=True, grpc_port=0, settle_ms=30_000)
    try:
        async with RawAgents(orch) as agents, aiohttp.ClientSession() as session:
            await agents.join()
            http = Http(session, orch.port)
            reply = await http.post("/v1/rooms", json={"type": "match", "roomId": "x1"})
            assert reply.status == 503
            assert reply.cause == "NOT_READY"
            assert 1 <= int(reply.headers["Retry-After"]) <= 30
            ok = await http.post("/v1/rooms", json={"type": "match"})
            assert ok.status in (200, 201), ok.body
            assert (await http.get("/readyz")).status == 200  # ready throughout
            async with control_stub(orch.grpc_port) as stub:
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await stub.CreateRoom(
                        pb.CreateRoomRequest(type="match", room_id="x1"), metadata=AUTH
                    )
                assert info.value.code() is grpc.StatusCode.UNAVAILABLE
                assert grpc_cause(info.value) == "NOT_READY"
                trailing = dict(info.value.trailing_metadata() or ())
                assert 1 <= int(trailing["retry-after"]) <= 30
    finally:
        await orch.shutdown()


async def test_orphan_holds_of_a_socket_cut_are_recorded(tmp_path: Path) -> None:
    orch = await _started(tmp_path, api=False)
    path = tmp_path / "fleet.json"
    try:
        async with RawAgents(orch) as agents:
            agent = await agents.join(rooms={"kept": RawRoom("match", origin="fleet")})
            await agent.close(code=CUT)
            await wait_for(lambda: path.exists() and _record(path)["orphans"] != [], 3.0)
            orphans = _record(path)["orphans"]
            assert isinstance(orphans, list)
            assert [(o["id"], o["processUid"]) for o in orphans] == [("kept", agent.process_uid)]
            assert agent.process_uid in _processes(path)  # gone, not forgotten
    finally:
        await orch.shutdown()
