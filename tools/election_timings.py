"""Micro-timings of the role check every request makes, in ns per call: alone and as an
HA leader on etcd.

``python tools/election_timings.py [ROUNDS]`` starts a real etcd (``etcd`` on PATH,
127.0.0.1, ephemeral ports, a temporary data dir), an :class:`~fleet_server.Orchestrator`
alone and one that leads a cluster on that etcd, in this process, and times
``Coordinator.leads()`` — the check a create makes twice (the HTTP guard and
``Fleet.create_room``) — and the lease check under it. Each figure is the minimum over
``ROUNDS`` rounds, in CPU time, so other work on the machine disturbs it as little as it
can.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
import timeit
from collections.abc import Callable
from pathlib import Path

if __package__ in (None, ""):  # run as a script: python tools/election_timings.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fleet_server import Orchestrator
from tests.support.etcd import EtcdServer

_AGENT_KEY = "timings-agent-key-0123456789abcdef"
_ADMIN_KEY = "timings-admin-key-0123456789abcdef"
_CALLS = 50_000  # per round: well under the lease, which the loop must keep renewing


async def best_ns(call: Callable[[], object], rounds: int, still: Callable[[], bool]) -> float:
    """The fastest round's CPU time per call, in ns; between rounds the event loop runs
    (the lease's keepalive), and ``still()`` must hold after each round."""
    timer = timeit.Timer(call, timer=time.process_time)
    best = float("inf")
    for _ in range(rounds):
        best = min(best, timer.timeit(_CALLS))
        if not still():
            raise SystemExit("the node's role changed while it was timed")
        await asyncio.sleep(0.05)
    return best / _CALLS * 1e9


async def main(rounds: int) -> None:
    logging.basicConfig(level=logging.WARNING)
    with EtcdServer() as etcd:
        single = Orchestrator(host="127.0.0.1", port=0, agent_key=_AGENT_KEY, admin_key=_ADMIN_KEY)
        leader = Orchestrator(
            host="127.0.0.1",
            port=0,
            agent_key=_AGENT_KEY,
            admin_key=_ADMIN_KEY,
            etcd_endpoints=[etcd.endpoint],
            cluster="timings",
        )
        async with single, leader:
            deadline = time.monotonic() + 30
            while leader._cluster.role != "leader":
                if time.monotonic() > deadline:
                    raise SystemExit("the clustered node did not take the lead")
                await asyncio.sleep(0.05)
            leads = leader._cluster.leads
            election = leader._cluster._election
            assert election is not None
            cases: list[tuple[str, Callable[[], object]]] = [
                ("single: Coordinator.leads()", single._cluster.leads),
                ("HA leader: Coordinator.leads()", leads),
                ("HA leader: Election.is_leader()", election.is_leader),
                ("time.monotonic()", time.monotonic),
            ]
            print(f"role check per call, minimum of {rounds} rounds of {_CALLS:,} (CPU ns)")
            for name, call in cases:
                print(f"  {name:<32} {await best_ns(call, rounds, leads):6.0f}")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 7))
