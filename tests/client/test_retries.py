"""Creates that never duplicate (docs/fleet-client.md §3): a late ack after a 504, a
socket cut mid-create (502), an orchestrator that is settling; both transports."""

from __future__ import annotations

import os
from pathlib import Path

from rivalis.fleet.v3 import agent_pb2

from fleet_client import OutcomeUnknown
from fleet_server import Orchestrator
from tests.support.orchestrators import agent_url, new_orchestrator, running_orchestrator
from tests.support.raw_agent import RawAgent
from tests.support.waits import wait_for

from .conftest import client_for

TRIES = int(os.environ.get("CLIENT_TRIES", "3"))  # `make chaos`: 20


def _holders(orch: Orchestrator, room_id: str) -> list[str]:
    return [i.id for i in orch.fleet.instances if any(r.id == room_id for r in i.rooms)]


async def test_a_create_the_game_server_made_without_acking_in_time_resolves_to_it(
    transport: str,
) -> None:
    """The 504 case: the game server has the room but its ack never came in time; the
    client never sends the create again and returns the room once it is listed."""
    async with running_orchestrator(
        api=True, grpc_port=0, heartbeat_ms=60, command_timeout_ms=300
    ) as orch:
        slow = RawAgent(agent_url(orch.port), name="slow")

        async def create_without_ack(cmd: agent_pb2.Command) -> agent_pb2.Ack | None:
            slow.execute(cmd)  # it has the room, and lists it from its next reply on
            return None

        slow.on_command = create_without_ack
        async with slow, RawAgent(agent_url(orch.port), name="other") as other:
            await wait_for(lambda: len(orch.fleet.instances) == 2)
            async with client_for([orch], transport) as fleet:
                for n in range(TRIES):
                    room_id = f"late-{n}"
                    room = await fleet.create_room(
                        "match", room_id=room_id, placement={"instanceId": slow.instance_id}
                    )
                    assert room.id == room_id and room.instance_id == slow.instance_id
                    assert room_id in slow.rooms and room_id not in other.rooms
                    assert _holders(orch, room_id) == [slow.instance_id]
                    assert [c.room_id for c in slow.commands].count(room_id) == 1


async def test_a_create_the_game_server_never_made_ends_outcome_unknown(transport: str) -> None:
    async with running_orchestrator(
        api=True, grpc_port=0, heartbeat_ms=60, command_timeout_ms=300
    ) as orch:
        mute = RawAgent(agent_url(orch.port))

        async def never(cmd: agent_pb2.Command) -> agent_pb2.Ack | None:
            return None

        mute.on_command = never
        async with mute:
            await wait_for(lambda: orch.fleet.instances)
            async with client_for([orch], transport, resolve_timeout_s=20) as fleet:
                try:
                    await fleet.create_room("match", room_id="ghost")
                except OutcomeUnknown as exc:
                    assert "ghost" in str(exc) and "not created" in str(exc)
                else:
                    raise AssertionError("a create nobody made resolved")
            assert len(mute.commands) == 1  # never sent again
            assert orch.fleet.get_room("ghost") is None


async def test_a_socket_cut_mid_create_resolves_when_the_process_comes_back(
    transport: str,
) -> None:
    async with (
        running_orchestrator(api=True, grpc_port=0, heartbeat_ms=60) as orch,
        client_for([orch], transport) as fleet,
    ):
        for n in range(TRIES):
            room_id = f"cut-{n}"
            first = RawAgent(agent_url(orch.port), name="cut")
            back: list[RawAgent] = []

            async def create_then_drop(
                cmd: agent_pb2.Command, agent: RawAgent = first, out: list[RawAgent] = back
            ) -> agent_pb2.Ack | None:
                agent.execute(cmd)  # created, then the link breaks before the ack
                assert agent.ws is not None
                await agent.ws.close(code=1011)
                again = RawAgent(
                    agent.url, name="cut", process_uid=agent.process_uid, rooms=agent.rooms
                )
                out.append(again)
                await again.connect()
                return None

            first.on_command = create_then_drop
            async with first:
                await wait_for(lambda: len(orch.fleet.instances) == 1)
                room = await fleet.create_room("match", room_id=room_id)
                assert room.id == room_id
                await wait_for(lambda out=back: len(out) == 1)  # type: ignore[misc]
                assert room.instance_id == back[0].instance_id
                assert _holders(orch, room_id) == [back[0].instance_id]
                assert len(first.commands) == 1 and back[0].commands == []
                await back[0].close()
                await wait_for(lambda: not orch.fleet.instances)


async def test_creates_wait_out_settling_after_a_restart(transport: str, tmp_path: Path) -> None:
    """A client-made id is a named create to the orchestrator: after a restart with a
    store it waits (``NOT_READY`` + ``Retry-After``) until the recorded processes are back
    or ``settle_ms`` passes; that wait is what keeps its retries from duplicating."""
    state = tmp_path / "state.json"
    first = new_orchestrator(state_path=str(state), heartbeat_ms=60, api=True, grpc_port=0)
    await first.listen()
    gone = RawAgent(agent_url(first.port), name="gone")
    await gone.connect()
    await wait_for(lambda: first.fleet.instances)
    await first.shutdown()  # "gone" is recorded and never comes back
    await gone.close()
    second = new_orchestrator(
        state_path=str(state), heartbeat_ms=60, api=True, grpc_port=0, settle_ms=1500
    )
    await second.listen()
    try:
        async with RawAgent(agent_url(second.port), name="here"):
            await wait_for(lambda: second.fleet.instances)
            async with client_for([second], transport) as fleet:
                assert not (await fleet.cluster()).settled
                room = await fleet.create_room("match")
                named = await fleet.create_room("match", room_id="after-settle")
                assert named.id == "after-settle" and room.id != named.id
                assert second.fleet.roster.settled and (await fleet.cluster()).settled
    finally:
        await second.shutdown()
