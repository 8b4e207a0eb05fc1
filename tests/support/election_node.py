"""One election node in a process of its own, for tests that SIGKILL or SIGSTOP a leader:

    python -m tests.support.election_node ENDPOINT NODE_ID LEASE_MS

It prints its role (``leader`` or ``standby``) on a line of its own at every change."""

from __future__ import annotations

import asyncio
import sys

from fleet_server._election import Election, NodeInfo


def node_info(node_id: str) -> NodeInfo:
    """The addresses a test node advertises (nothing listens on them)."""
    return NodeInfo(
        id=node_id,
        url=f"http://{node_id}.test:7350",
        grpc_url=f"{node_id}.test:7351",
        agent_url=f"ws://{node_id}.test:7350",
    )


async def main(endpoint: str, node_id: str, lease_ms: int) -> None:
    last: list[str] = []

    def changed() -> None:
        if last != [election.role]:
            last[:] = [election.role]
            print(election.role, flush=True)

    election = Election(
        endpoints=[endpoint],
        cluster="test",
        node=node_info(node_id),
        lease_ms=lease_ms,
        on_change=changed,
    )
    async with election:
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
