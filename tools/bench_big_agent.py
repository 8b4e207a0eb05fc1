"""The ``bigagent`` scenario of :mod:`tools.bench`: one agent whose snapshot is far
larger than a 4 MiB frame (CONTRACT §15, docs/snapshots-at-scale.md).

- *join*: the real :class:`fleet_agent.FleetAgent` holding 100,000 rooms with about
  256 B of metadata each (:mod:`tools.agent_proc`) joins the real orchestrator
  (:mod:`tools.loadgen.target`, heartbeat 1,000 ms); the figure is the time from the
  agent's Hello to every room being in the orchestrator's read model, with the
  orchestrator's worst loop stall while it took them.
- *churn*: the agent changes 1 % of its rooms per second (one change in twenty replaces
  a room) for a while; the figures are the orchestrator's CPU per second and loop stall,
  the agent's CPU, and whether, once the churn stops, the orchestrator's rooms and
  connections agree with the agent's.
- *hash-only replies*: the same agent polled back to back with its hash
  (:mod:`tools.agent_poller`) next to a 100-room agent without metadata, the floor.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from tools.bench import Row, at_most, at_most_ratio, log
from tools.bench_agent import AgentSizes, agent_process, poll_burst
from tools.loadgen import OrchestratorProcess

if TYPE_CHECKING:
    from tools.bench import Bench

__all__ = ["BigAgentSizes", "big_agent"]

SAME_AS_SMALL: Final = 1.3
"""A big agent's hash-only reply may cost at most this much of a small agent's."""
STALL_MS: Final = 50.0


@dataclass(frozen=True)
class BigAgentSizes:
    rooms: int = 100_000
    metadata_bytes: int = 256
    heartbeat_ms: int = 1000
    churn: float = 0.01
    churn_s: float = 30.0
    small_rooms: int = 100
    hash_polls: int = 2_000


QUICK: Final = BigAgentSizes(rooms=20_000, churn_s=8.0, hash_polls=500)


def _join_and_churn(bench: Bench, s: BigAgentSizes) -> None:
    label = f"{s.rooms:,} rooms × {s.metadata_bytes} B metadata"
    with OrchestratorProcess(heartbeat_ms=s.heartbeat_ms) as orch:
        log(f"bigagent: one agent with {label} starts")
        with agent_process("real", orch.agent_url, s.rooms, "big", s.metadata_bytes) as agent:
            orch.reset()
            started = time.monotonic()
            joined = orch.wait_instances(1, timeout=300, rooms=s.rooms)
            join_s = time.monotonic() - started
            stats = orch.stats()
            bench.add(
                Row(
                    "bigagent",
                    f"one agent with {label}: Hello to every room in the read model (s)",
                    join_s if joined else None,
                    "s",
                    note=f"loop stall max {stats['loop_lag_ms']['max']:.0f} ms while joining",
                )
            )
            if not joined:
                return
            time.sleep(2 * s.heartbeat_ms / 1000)
            orch.reset()
            cpu0, agent0 = orch.cpu_seconds(), agent.cpu_seconds()
            agent.command(f"churn {s.churn}")
            time.sleep(s.churn_s)
            agent.command("churn 0")
            cpu, agent_cpu = orch.cpu_seconds() - cpu0, agent.cpu_seconds() - agent0
            during = orch.stats()
            time.sleep(3 * s.heartbeat_ms / 1000)
            _report_churn(bench, s, orch, agent.command("stats"), during, cpu, agent_cpu)


def _report_churn(
    bench: Bench,
    s: BigAgentSizes,
    orch: OrchestratorProcess,
    held: dict[str, object],
    during: dict[str, object],
    cpu: float,
    agent_cpu: float,
) -> None:
    seen = orch.stats()
    agree = seen["rooms"] == held["rooms"] and seen["connections"] == held["connections"]
    lag = during["loop_lag_ms"]
    assert isinstance(lag, dict)
    rejected = {k: v for k, v in dict(seen.get("warnings", {})).items() if "reject" in k}
    bench.add(
        Row(
            "bigagent",
            f"in sync after {s.churn_s:g} s of {s.churn:.0%}/s churn (rooms, connections)",
            1.0 if agree and not rejected else 0.0,
            "",
            target="= 1 (agree)",
            note=f"orchestrator {seen['rooms']:,} / {seen['connections']:,}, agent "
            f"{held['rooms']:,} / {held['connections']:,}, {held.get('changes', 0):,} changes"
            + (f", warnings {rejected}" if rejected else ""),
            ok=bool(agree and not rejected),
        )
    )
    bench.add(
        at_most(
            Row(
                "bigagent",
                f"orchestrator loop stall max during the churn (ms) — p99 {lag['p99']:.0f} ms",
                float(lag["max"]),
                "ms",
                note=f"orchestrator {cpu / s.churn_s:.1%} of a core, "
                f"agent {agent_cpu / s.churn_s:.1%} of a core",
            ),
            STALL_MS,
            "ms",
        )
    )


def big_agent(bench: Bench) -> None:
    s = QUICK if bench.quick else BigAgentSizes()
    _join_and_churn(bench, s)
    sizes = AgentSizes(hash_polls=s.hash_polls, full_polls=3)
    log(f"bigagent: hash-only replies, {s.rooms:,} rooms with metadata and {s.small_rooms}")
    big, big_full, stray, size = poll_burst(bench, sizes, "real", s.rooms, s.metadata_bytes)
    small, _, _, _ = poll_burst(bench, sizes, "real", s.small_rooms)
    bench.add(
        at_most_ratio(
            Row(
                "bigagent",
                f"agent CPU per hash-only reply, {s.rooms:,} rooms × {s.metadata_bytes} B "
                f"metadata; floor: {s.small_rooms} rooms (µs)",
                big * 1e6 if stray == 0 else None,
                "µs",
                floor=small * 1e6,
                note=f"a full reply: {size / 2**20:.1f} MiB in parts, {big_full * 1e3:.0f} ms"
                + ("" if stray == 0 else f"; {stray} replies were full"),
            ),
            SAME_AS_SMALL,
        )
    )
