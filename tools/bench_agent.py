"""The ``agent`` scenario of :mod:`tools.bench`: what the real agent costs inside a game
server, each figure next to a floor from the same run.

Every agent runs alone in its process (:mod:`tools.agent_proc`): the real
:class:`fleet_agent.FleetAgent` over a :class:`fleet_agent.RoomManager`, or the floor, a
bare WebSocket client answering with precomputed frames. Their CPU time comes from
``/proc/<pid>``.

- *creates*: 4 agents holding 2,000 rooms each join the real orchestrator
  (:mod:`tools.loadgen.target`, heartbeat 1,000 ms) and ``POST /v1/rooms`` runs at
  concurrency 16 for a fixed number of creates; the figure is the agents' CPU (polls
  included) per successful create. The floor is the same run with 4 floor agents.
- *hash-only replies*: one agent holding 100, 2,000 or 20,000 rooms is polled back to
  back by :mod:`tools.agent_poller` with the hash of its snapshot, so every reply is
  hash-only; the figure is its CPU per reply. Then the same agent answers full replies
  (a figure without a target). The floor is the floor agent under the same polls.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from tools.bench import HOST, Row, at_most, log, post_create, run_http
from tools.loadgen import OrchestratorProcess, ServerProcess

if TYPE_CHECKING:
    from tools.bench import Bench

__all__ = ["AgentSizes", "agent"]

CREATE_TARGET_US: Final = 150.0
HASH_TARGET_US: Final = 50.0
LOOP: Final = "asyncio"
"""Both agents run the stdlib loop: a game server's unless it installs another (and the
floor's client is an asyncio protocol)."""


@dataclass(frozen=True)
class AgentSizes:
    agents: int = 4
    heartbeat_ms: int = 1000
    rooms: int = 2_000  # each agent's rooms when the creates start
    creates_per_agent: int = 500
    concurrency: int = 16
    settle_s: float = 2.5
    poll_rooms: tuple[int, ...] = (100, 2_000, 20_000)
    hash_polls: int = 5_000
    full_polls: int = 50


QUICK: Final = AgentSizes(settle_s=1.5, creates_per_agent=250, hash_polls=1_500, full_polls=10)


def agent_process(
    mode: str, url: str, rooms: int, name: str, metadata_bytes: int = 0
) -> ServerProcess:
    args = [mode, "--url", url, "--rooms", str(rooms), "--name", name, "--loop", LOOP]
    if metadata_bytes:
        args += ["--metadata-bytes", str(metadata_bytes)]
    return ServerProcess("tools.agent_proc", args, ready_timeout=300.0)


@contextlib.contextmanager
def agents(mode: str, url: str, count: int, rooms: int) -> Iterator[list[ServerProcess]]:
    with contextlib.ExitStack() as stack:
        yield [
            stack.enter_context(agent_process(mode, url, rooms, f"bench-{mode}-{i}"))
            for i in range(count)
        ]


def _cpu(procs: list[ServerProcess]) -> float:
    return sum(proc.cpu_seconds() for proc in procs)


def create_burst(bench: Bench, sizes: AgentSizes, mode: str) -> tuple[float, int, str]:
    """Agent CPU seconds per successful create, the creates, and the rooms per agent."""
    n = sizes.agents
    with (
        OrchestratorProcess(heartbeat_ms=sizes.heartbeat_ms) as orch,
        agents(mode, orch.agent_url, n, sizes.rooms) as procs,
    ):
        if not orch.wait_instances(n, timeout=120, rooms=n * sizes.rooms):
            raise RuntimeError(f"agent: {n} {mode} agents did not join with their rooms")
        time.sleep(sizes.settle_s)
        recording = bench.profiler.start(f"agent-create-{mode}", procs[0].pid, 120)
        cpu0 = _cpu(procs)
        run = run_http(
            orch,
            post_create(f"agent-{mode}"),
            concurrency=sizes.concurrency,
            count=n * sizes.creates_per_agent,
        )
        cpu = _cpu(procs) - cpu0
        if recording is not None:
            recording.stop()
        created = run.result.statuses.get(201, 0)
        rooms = [int(proc.command("stats")["rooms"]) for proc in procs]
    spread = f"{sizes.rooms:,} → {min(rooms):,}–{max(rooms):,} rooms per agent"
    return cpu / max(1, created), created, spread


def poll_burst(
    bench: Bench, sizes: AgentSizes, mode: str, rooms: int, metadata_bytes: int = 0
) -> tuple[float, float, int, int]:
    """Agent CPU seconds per hash-only reply and per full reply, the full replies among
    the hash-only ones (0 when all went as meant) and the size of a full reply."""
    with ServerProcess("tools.agent_poller", []) as poller:
        url = f"ws://{HOST}:{poller.port}/"
        with agent_process(mode, url, rooms, f"bench-{mode}", metadata_bytes) as proc:
            timeout = 60 + sizes.hash_polls * rooms / 1e6
            poller.command("polls 20 hash", timeout)  # warm up
            with bench.profiler.phase(f"agent-polls-{rooms}-{mode}", proc.pid, 1.0):
                cpu0 = proc.cpu_seconds()
                hashed = poller.command(f"polls {sizes.hash_polls} hash", timeout)
                hash_cpu = proc.cpu_seconds() - cpu0
            cpu0 = proc.cpu_seconds()
            full = poller.command(f"polls {sizes.full_polls} full", timeout)
            full_cpu = proc.cpu_seconds() - cpu0
    if "error" in hashed or "error" in full:
        raise RuntimeError(f"agent: poll burst failed: {hashed} {full}")
    return (
        hash_cpu / max(1, int(hashed["polls"])),
        full_cpu / max(1, int(full["polls"])),
        int(hashed["full"]),
        int(full["bytes"]),
    )


def agent(bench: Bench) -> None:
    sizes = QUICK if bench.quick else AgentSizes()
    n = sizes.agents
    log(
        f"agent: {n} real agents × {sizes.rooms:,} rooms, "
        f"{n * sizes.creates_per_agent:,} creates ×{sizes.concurrency}"
    )
    real, created, spread = create_burst(bench, sizes, "real")
    log(f"agent: {n} floor agents × {sizes.rooms:,} rooms, the same creates")
    floor, _, _ = create_burst(bench, sizes, "floor")
    bench.add(
        at_most(
            Row(
                "agent",
                f"real agent CPU per create, {n} agents, heartbeat {sizes.heartbeat_ms} ms",
                real * 1e6,
                "µs",
                floor=floor * 1e6,
                note=f"{created:,} creates ×{sizes.concurrency}, {spread}, polls included",
            ),
            CREATE_TARGET_US,
            "µs",
        )
    )
    for rooms in sizes.poll_rooms:
        log(f"agent: {rooms:,} rooms, {sizes.hash_polls:,} polls back to back")
        hash_cost, full_cost, stray, size = poll_burst(bench, sizes, "real", rooms)
        floor_hash, floor_full, _, _ = poll_burst(bench, sizes, "floor", rooms)
        bench.add(
            at_most(
                Row(
                    "agent",
                    f"real agent CPU per hash-only reply, {rooms:,} rooms",
                    hash_cost * 1e6 if stray == 0 else None,
                    "µs",
                    floor=floor_hash * 1e6,
                    note="" if stray == 0 else f"{stray} replies were full",
                ),
                HASH_TARGET_US,
                "µs",
            )
        )
        bench.add(
            Row(
                "agent",
                f"real agent CPU per full reply, {rooms:,} rooms, nothing changed",
                full_cost * 1e6,
                "µs",
                floor=floor_full * 1e6,
                note=f"{size / 1024:,.0f} KiB",
            )
        )
