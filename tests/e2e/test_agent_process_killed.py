"""An agent process killed with a create in flight fails it at once, not at the timeout."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from fleet_server import ErrorCode, FleetError, Placement
from tests.support.keys import KEY
from tests.support.orchestrators import agent_url, listed, running_orchestrator

ROOT = Path(__file__).resolve().parents[2]


async def test_killed_agent_fails_the_pending_create_with_instance_disconnected() -> None:
    async with running_orchestrator(heartbeat_ms=1000, command_timeout_ms=30_000) as orch:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.e2e.agent_process",
            agent_url(orch.port),
            KEY,
            "doomed",
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
        )
        try:
            assert proc.stdout is not None
            line = await asyncio.wait_for(proc.stdout.readline(), 20)
            instance_id = line.decode().split()[1]
            await listed(orch, instance_id)
            create = asyncio.ensure_future(
                orch.fleet.create_room(
                    "slow", room_id="never", placement=Placement(instance_id=instance_id)
                )
            )
            await asyncio.sleep(0.3)
            assert not create.done()
            started = time.monotonic()
            os.kill(proc.pid, signal.SIGKILL)
            with pytest.raises(FleetError) as info:
                await asyncio.wait_for(create, 10)
            elapsed = time.monotonic() - started
            assert info.value.code is ErrorCode.INSTANCE_DISCONNECTED
            print(f"kill -> INSTANCE_DISCONNECTED in {elapsed * 1000:.1f} ms")
            assert elapsed < 5, elapsed  # far below the 30 s command timeout
            assert orch.fleet.get_instance(instance_id) is None
            assert not orch.fleet._read.is_taken("never")
            assert "never" not in orch.fleet._reserved
        finally:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()
