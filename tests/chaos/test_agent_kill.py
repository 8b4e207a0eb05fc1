"""Agent processes killed with SIGKILL while creates and destroys are in flight.

The kernel closes a killed process's sockets, so the orchestrator sees the agent's
WebSocket end at once: every command still pending on that instance must fail with
``INSTANCE_DISCONNECTED`` right then — far inside one poll interval, never at the
command timeout. The ids the killed process accounted for (its rooms, the creates it
was sent) stay taken as orphan holds (CONTRACT §9): the process might have created
them. A dead process never comes back, so they are free again after ``orphan_hold_ms``.
"""

from __future__ import annotations

import asyncio
import random
import signal
import time
from pathlib import Path
from typing import Any

from fleet_server import FleetError, Orchestrator, Placement
from tests.support.figures import report
from tests.support.orchestrators import agent_url, link_of, listed, running_orchestrator
from tests.support.waits import wait_for

from .support import AgentProcess, agent_processes

HEARTBEAT_MS = 2000  # one poll interval
TIMEOUT_MS = 30_000  # the command timeout the failures must not wait for
ORPHAN_HOLD_MS = 1500


class Outcomes:
    """Each operation's outcome and the monotonic time it settled."""

    def __init__(self) -> None:
        self.settled: list[tuple[str, str, float]] = []  # (op, outcome code or "ok", at)

    async def run(self, op: str, awaitable: Any) -> None:
        try:
            await awaitable
            outcome = "ok"
        except FleetError as exc:
            outcome = exc.code.value
        self.settled.append((op, outcome, time.monotonic()))


def assert_ids_free(orch: Orchestrator, room_ids: list[str]) -> None:
    fleet = orch.fleet
    assert not fleet._reserved, sorted(fleet._reserved)
    for room_id in room_ids:
        assert not fleet._read.is_taken(room_id), room_id
        assert room_id not in fleet.orphans, room_id


async def test_sigkill_fails_every_pending_command_at_once_and_holds_the_ids_until_they_lapse(
    tmp_path: Path,
) -> None:
    async with (
        running_orchestrator(
            heartbeat_ms=HEARTBEAT_MS, command_timeout_ms=TIMEOUT_MS, orphan_hold_ms=ORPHAN_HOLD_MS
        ) as orch,
        agent_processes() as hosts,
    ):
        url = agent_url(orch.port)
        victim, survivor = await asyncio.gather(
            AgentProcess.start(url, "victim", tmp_path),
            AgentProcess.start(url, "survivor", tmp_path),
        )
        hosts += [victim, survivor]
        vid, sid = victim.latest().instance_id, survivor.latest().instance_id
        await wait_for(lambda: orch.fleet.stats.instances == 2, 10)
        on_victim = Placement(instance_id=vid)
        for i in range(8):
            await orch.fleet.create_room("match", room_id=f"old-{i}", placement=on_victim)

        # The agent handles commands in order: a create that never finishes holds every
        # later command in flight on the orchestrator's side.
        outcomes = Outcomes()
        fleet = orch.fleet
        running = [
            asyncio.ensure_future(
                outcomes.run("create", fleet.create_room("slow", "blocker", on_victim))
            )
        ]
        await wait_for(lambda: len(link_of(orch, vid).pending) == 1)
        ops = [
            outcomes.run("create", fleet.create_room("match", f"new-{i}", on_victim))
            for i in range(12)
        ]
        ops += [outcomes.run("destroy", fleet.destroy_room(f"old-{i}")) for i in range(8)]
        running += [asyncio.ensure_future(op) for op in ops]
        await wait_for(lambda: len(link_of(orch, vid).pending) == 21)
        await asyncio.sleep(0.2)
        assert not outcomes.settled  # all 21 in flight

        killed = time.monotonic()
        victim.signal(signal.SIGKILL)
        await asyncio.wait_for(asyncio.gather(*running), HEARTBEAT_MS / 1000)
        latencies = [(at - killed) * 1000 for _, _, at in outcomes.settled]
        assert {outcome for _, outcome, _ in outcomes.settled} == {"INSTANCE_DISCONNECTED"}
        assert len(outcomes.settled) == 21
        assert max(latencies) < HEARTBEAT_MS / 2, latencies
        report(
            "sigkill, 21 commands blocked in flight",
            first_ms=min(latencies),
            last_ms=max(latencies),
            poll_interval_ms=HEARTBEAT_MS,
        )
        assert orch.fleet.get_instance(vid) is None
        ids = ["blocker", *(f"new-{i}" for i in range(12)), *(f"old-{i}" for i in range(8))]
        # Sent to the victim (or listed by it): it may have them, so they stay taken …
        assert orch.fleet.orphans.holds_of(victim.latest().process_uid) == set(ids)
        for room_id in ids:
            try:
                await fleet.create_room("match", room_id, Placement(instance_id=sid))
            except FleetError as exc:
                assert exc.code.value == "ROOM_EXISTS"
            else:
                raise AssertionError(f"{room_id} was placed while its process may have it")
        # … until the hold lapses: the killed process never came back.
        await wait_for(lambda: not orch.fleet.orphans, ORPHAN_HOLD_MS / 1000 + 5)
        assert_ids_free(orch, ids)
        # Free for real: the same ids can be created again, on the survivor.
        for room_id in ids:
            room = await fleet.create_room("match", room_id, Placement(instance_id=sid))
            assert room.instance_id == sid


async def test_sigkill_mid_stream_settles_every_command_within_the_poll_interval(
    tmp_path: Path,
) -> None:
    """Creates and destroys at full speed against one agent; the kill lands mid-stream."""
    rng = random.Random(7)
    async with (
        running_orchestrator(heartbeat_ms=HEARTBEAT_MS, command_timeout_ms=TIMEOUT_MS) as orch,
        agent_processes() as hosts,
    ):
        url = agent_url(orch.port)
        rounds: list[dict[str, Any]] = []
        for round_no in range(3):
            victim = await AgentProcess.start(url, f"stream-{round_no}", tmp_path)
            hosts.append(victim)
            rounds.append(await kill_mid_stream(orch, victim, f"s{round_no}", rng))
        report(
            "sigkill mid-stream (3 rounds, 16 workers)",
            in_flight=[r["in_flight"] for r in rounds],
            disconnected=[r["disconnected"] for r in rounds],
            last_settled_ms=[round(r["last_ms"], 1) for r in rounds],
        )
        assert orch.fleet.stats.instances == 0
        assert not any(link.pending for link in orch.transport.links)


async def kill_mid_stream(
    orch: Orchestrator, victim: AgentProcess, prefix: str, rng: random.Random
) -> dict[str, Any]:
    vid = victim.latest().instance_id
    await listed(orch, vid, 10)
    placement = Placement(instance_id=vid)
    outcomes = Outcomes()
    stop = asyncio.Event()
    tried: list[str] = []

    async def worker(n: int) -> None:
        i = 0
        while not stop.is_set():
            room_id = f"{prefix}-{n}-{i}"
            i += 1
            tried.append(room_id)
            before = len(outcomes.settled)
            await outcomes.run("create", orch.fleet.create_room("match", room_id, placement))
            if outcomes.settled[before][1] != "ok":
                return
            await outcomes.run("destroy", orch.fleet.destroy_room(room_id))
            if outcomes.settled[-1][1] != "ok":
                return

    workers = [asyncio.ensure_future(worker(n)) for n in range(16)]
    await asyncio.sleep(0.3 + rng.random() * 0.4)
    in_flight = len(link_of(orch, vid).pending)
    settled_before = len(outcomes.settled)
    killed = time.monotonic()
    victim.signal(signal.SIGKILL)
    await wait_for(lambda: orch.fleet.get_instance(vid) is None, HEARTBEAT_MS / 1000)
    stop.set()
    await asyncio.wait_for(asyncio.gather(*workers), HEARTBEAT_MS / 1000)
    after = outcomes.settled[settled_before:]
    failed = [(op, code, at) for op, code, at in after if code != "ok"]
    assert failed, "the kill landed after the stream"
    # In flight at the kill → INSTANCE_DISCONNECTED; started just after the teardown →
    # the instance or the room is already unknown.
    assert {code for _, code, _ in failed} <= {
        "INSTANCE_DISCONNECTED",
        "INSTANCE_NOT_FOUND",
        "ROOM_NOT_FOUND",
    }, failed
    assert any(code == "INSTANCE_DISCONNECTED" for _, code, _ in failed)
    last_ms = max((at - killed) * 1000 for _, _, at in after)
    assert last_ms < HEARTBEAT_MS / 2, last_ms
    # Nothing stays reserved; what the victim may have (rooms, creates it was sent) is
    # held for its process and nothing else is.
    assert not orch.fleet._reserved
    held = orch.fleet.orphans.holds_of(victim.latest().process_uid)
    assert held <= set(tried)
    assert_ids_free(orch, [room_id for room_id in tried if room_id not in held])
    return {
        "in_flight": in_flight,
        "disconnected": sum(1 for f in failed if f[1] == "INSTANCE_DISCONNECTED"),
        "last_ms": last_ms,
    }
