"""Agent processes frozen with SIGSTOP, then thawed with SIGCONT.

A frozen process keeps its socket open (the kernel still accepts bytes for it) but
answers nothing: at the 2nd missed poll the instance is stale — still listed, out of
strategy placement, pinnable only with ``force`` — and at the 3rd it is evicted. Thawed,
the agent reads what queued up meanwhile (its late frames may get it kicked), then
reconnects with the same process_uid and comes back whole.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from fleet_server import ErrorCode, FleetError, Placement
from tests.support.figures import report
from tests.support.orchestrators import agent_url, running_orchestrator
from tests.support.waits import wait_for

from .support import AgentProcess, agent_processes

HEARTBEAT_MS = 400
H = HEARTBEAT_MS / 1000
SLACK_S = 0.5  # scheduling noise on a loaded 2-core machine


async def test_sigstop_goes_stale_at_two_missed_polls_evicted_at_three_and_rejoins_after_sigcont(
    tmp_path: Path,
) -> None:
    async with (
        running_orchestrator(heartbeat_ms=HEARTBEAT_MS, command_timeout_ms=5000) as orch,
        agent_processes() as hosts,
    ):
        url = agent_url(orch.port)
        frozen, healthy = await asyncio.gather(
            AgentProcess.start(url, "frozen", tmp_path),
            AgentProcess.start(url, "healthy", tmp_path),
        )
        hosts += [frozen, healthy]
        first = frozen.latest()
        fid, hid = first.instance_id, healthy.latest().instance_id
        await wait_for(lambda: orch.fleet.stats.instances == 2, 10)
        frozen.send("local 0 mine")
        await wait_for(lambda: orch.fleet.get_room("mine") is not None, 5)
        await orch.fleet.create_room("match", "theirs", Placement(instance_id=fid))

        seen: dict[str, float] = {}

        def note(kind: str) -> Any:
            def listener(info: Any) -> None:
                if info.id == fid:
                    seen.setdefault(kind, time.monotonic())

            return listener

        orch.on("instance:stale", note("stale"))
        orch.on("instance:leave", note("leave"))

        stopped = time.monotonic()
        frozen.signal(signal.SIGSTOP)
        await wait_for(lambda: "stale" in seen, 3 * H + SLACK_S)
        stale_after = seen["stale"] - stopped
        assert H * 0.9 <= stale_after <= 3 * H + SLACK_S, stale_after
        assert "leave" not in seen
        # Stale: still listed and counted, out of placement, pinnable only with force.
        assert orch.fleet.get_instance(fid) is not None
        assert orch.fleet.get_room("mine") is not None
        placed = [await orch.fleet.create_room("match", f"while-stale-{i}") for i in range(5)]
        assert {room.instance_id for room in placed} == {hid}
        with pytest.raises(FleetError) as info:
            await orch.fleet.create_room("match", "pinned", Placement(instance_id=fid))
        assert info.value.code is ErrorCode.INSTANCE_DISCONNECTED
        assert "leave" not in seen, "evicted before the placements ran"

        await wait_for(lambda: "leave" in seen, H + SLACK_S)
        evicted_after = seen["leave"] - stopped
        assert H * 0.9 <= seen["leave"] - seen["stale"] <= H + SLACK_S
        assert orch.fleet.get_instance(fid) is None
        assert orch.fleet.get_room("mine") is None and orch.fleet.get_room("theirs") is None

        resumed = time.monotonic()
        frozen.signal(signal.SIGCONT)
        again = await frozen.wait_rejoin(0, after=fid)
        assert again.process_uid == first.process_uid
        await wait_for(lambda: orch.fleet.get_room("theirs") is not None, 5, step=0.002)
        whole = time.monotonic()
        mine, theirs = orch.fleet.get_room("mine"), orch.fleet.get_room("theirs")
        assert mine is not None and mine.instance_id == again.instance_id and mine.local
        assert theirs is not None and theirs.instance_id == again.instance_id and not theirs.local
        instance = orch.fleet.get_instance(again.instance_id)
        assert instance is not None and instance.process_uid == first.process_uid
        assert orch.fleet.stats.instances == 2
        # Back in placement: a pin without force works, and so does a strategy create.
        room = await orch.fleet.create_room(
            "match", "after-thaw", Placement(process_uid=first.process_uid)
        )
        assert room.instance_id == again.instance_id
        report(
            "sigstop/sigcont",
            heartbeat_ms=HEARTBEAT_MS,
            stale_after_ms=stale_after * 1000,
            evicted_after_ms=evicted_after * 1000,
            rejoin_after_sigcont_ms=(again.at - resumed) * 1000,
            whole_after_rejoin_ms=(whole - again.at) * 1000,
        )
        assert whole - again.at < H
