"""Cross-language: a Node.js agent (tests/agent/node/agent.js: protobufjs over protos/,
the `ws` package, node:crypto) built from the .proto and docs/matchmaking.md alone
receives create options, reports metadata with a hash Python agrees with, verifies seat
tickets minted by Python, and joins a real orchestrator with the agent key.

The node packages install once into ``.cache/node-agent`` (``npm ci`` of the committed
lock); later runs reuse them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from rivalis.fleet.v3 import agent_pb2

from fleet_agent import TicketError, wire
from fleet_agent._seats import SeatLedger
from fleet_agent._tickets import TicketClaims, mint_ticket, ticket_key
from tests.support.keys import KEY as ORCHESTRATOR_KEY
from tests.support.node import INSTALL_TIMEOUT_S, install_node_packages, needs_node
from tests.support.orchestrators import agent_url, running_orchestrator
from tests.support.waits import wait_for

from .fake_orchestrator import KEY, FakeOrchestrator

AGENT_DIR = Path(__file__).resolve().parent / "node"
EVENT_TIMEOUT_S = 10

pytestmark = [needs_node, pytest.mark.timeout(INSTALL_TIMEOUT_S + 90)]

METADATA: dict[str, Any] = {
    "teams": 2,
    "mode": "ranked",
    "where": {"é": "Zürich", "city": "Zürich", "z": [1, 2.5, True, None, "\u2028"]},
}


class NodeAgent:
    """The Node agent as a child process; its JSON-lines events on stdout."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.events: list[dict[str, Any]] = []

    async def next(self, event: str) -> dict[str, Any]:
        """The next event of this kind (earlier events of other kinds are kept)."""
        for seen in self.events:
            if seen["event"] == event:
                self.events.remove(seen)
                return seen
        assert self.process.stdout is not None
        while True:
            line = await asyncio.wait_for(self.process.stdout.readline(), EVENT_TIMEOUT_S)
            assert line, f"the node agent ended before a {event!r} event"
            parsed: dict[str, Any] = json.loads(line)
            if parsed["event"] == event:
                return parsed
            self.events.append(parsed)


@contextlib.asynccontextmanager
async def node_agent(
    url: str, key: str, config: dict[str, Any], tmp_path: Path
) -> AsyncIterator[NodeAgent]:
    node_modules = await install_node_packages(AGENT_DIR, "node-agent")
    config_path = tmp_path / "agent.json"
    config_path.write_text(json.dumps(config))
    env = {**os.environ, "NODE_PATH": str(node_modules), "FLEET_AGENT_KEY": key}
    process = await asyncio.create_subprocess_exec(
        "node",
        str(AGENT_DIR / "agent.js"),
        url,
        str(config_path),
        cwd=AGENT_DIR,
        env=env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        yield NodeAgent(process)
    finally:
        assert process.stdin is not None
        process.stdin.close()  # the agent leaves with 1000 and exits
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            process.kill()
            await process.wait()
        assert process.stderr is not None
        errors = (await process.stderr.read()).decode()
        assert key not in errors
        assert process.returncode == 0, errors


def config(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": "node1",
        "endpointUrl": "ws://node.example:9000",
        "labels": {"region": "eu"},
        "roomTypes": ["match"],
        "rooms": [
            {
                "id": "r1",
                "type": "match",
                "connections": 3,
                "metadata": METADATA,
                "maxConnections": 10,
                "locked": True,
            }
        ],
        "tickets": [],
    }
    base.update(overrides)
    return base


def python_hash(state: agent_pb2.State) -> str:
    """The snapshot hash Python computes from what the State carries."""
    return wire.snapshot_hash(
        name=state.name,
        process_uid=state.process_uid,
        agent_version=state.agent_version,
        protocol_version=state.protocol_version,
        endpoint_url=state.endpoint_url,
        labels=dict(state.labels),
        max_connections=None,
        max_rooms=None,
        auto_create=state.auto_create,
        room_types=list(state.room_types),
        rooms=[
            (
                r.id,
                r.type,
                r.connections,
                r.origin,
                r.metadata,
                r.max_connections if r.HasField("max_connections") else None,
                r.locked,
            )
            for r in state.rooms
        ],
        status=state.status,
        accepted_reservations=list(state.accepted_reservations),
    )


def tickets(key: str) -> list[dict[str, str]]:
    """One ticket per outcome, in an order that makes the reuse case a reuse."""
    exp = int(time.time() * 1000) + 60_000
    signed = ticket_key(key)
    valid = mint_ticket(signed, TicketClaims("s_1", "r1", 2, exp))
    not_json = "v1.bm90LWpzb24." + valid.split(".")[2]  # "not-json", a wrong signature too
    return [
        {"room": "r1", "ticket": valid},
        {
            "room": "r1",
            "ticket": mint_ticket(ticket_key("other"), TicketClaims("s_2", "r1", 1, exp)),
        },
        {"room": "r1", "ticket": mint_ticket(signed, TicketClaims("s_3", "r1", 1, 1_000))},
        {"room": "r1", "ticket": mint_ticket(signed, TicketClaims("s_4", "r2", 1, exp))},
        {"room": "r1", "ticket": valid},
        {"room": "r1", "ticket": "v1.!!.x"},
        {"room": "r1", "ticket": not_json},
    ]


def python_outcomes(key: str, presented: list[dict[str, str]]) -> list[str]:
    ledger = SeatLedger(key)
    outcomes = []
    for item in presented:
        try:
            ledger.accept(item["room"], item["ticket"])
            outcomes.append("ok")
        except TicketError as exc:
            outcomes.append(str(exc))
    return outcomes


async def test_a_node_agent_takes_options_reports_metadata_and_verifies_tickets(
    fake: FakeOrchestrator, tmp_path: Path
) -> None:
    presented = tickets(KEY)
    async with node_agent(fake.url, KEY, config(tickets=presented), tmp_path) as node:
        outcomes = [await node.next("ticket") for _ in presented]
        node_reasons = [e["reason"] if not e["ok"] else "ok" for e in outcomes]
        assert node_reasons == python_outcomes(KEY, presented)
        assert node_reasons == [
            "ok",
            "bad signature",
            "expired ticket",
            "ticket for another room",
            "ticket already used",
            "malformed ticket",
            "malformed ticket",
        ]
        assert outcomes[0]["reservation"]["id"] == "s_1"
        assert outcomes[0]["reservation"]["seats"] == 2

        link = await fake.next_link()
        await link.hello("i_node")
        assert (await node.next("hello"))["instance_id"] == "i_node"
        state = await link.poll()
        assert state.full and state.name == "node1"
        [room] = state.rooms
        assert room.metadata == wire.object_text(METADATA, wire.MAX_METADATA_BYTES, "metadata")
        assert room.HasField("max_connections") and room.max_connections == 10 and room.locked
        assert list(state.accepted_reservations) == ["s_1"]
        assert state.hash == python_hash(state)
        assert not (await link.poll(known_hash=state.hash)).full

        ack = await link.command(
            "create", room_id="r2", room_type="match", options='{"mode":"ranked","map":"dust"}'
        )
        assert ack.ok and ack.room.id == "r2"
        created = await node.next("create")
        assert created["options"] == {"map": "dust", "mode": "ranked"}
        bad = await link.command("create", room_id="r3", room_type="match", options="[1]")
        assert not bad.ok and bad.error == "options must be a JSON object"
        after = await link.poll(known_hash=state.hash)
        assert after.full and after.hash == python_hash(after)
        assert {(r.id, r.metadata, r.origin) for r in after.rooms} >= {
            ("r2", '{"map":"dust","mode":"ranked"}', "fleet")
        }


async def test_a_node_agent_joins_a_real_orchestrator_that_agrees_on_its_hash(
    tmp_path: Path,
) -> None:
    async with running_orchestrator(heartbeat_ms=100) as orch:
        presented = tickets(ORCHESTRATOR_KEY)[:1]
        url = agent_url(orch.port)
        async with node_agent(url, ORCHESTRATOR_KEY, config(tickets=presented), tmp_path) as node:
            assert (await node.next("ticket"))["ok"]
            instance_id = (await node.next("hello"))["instance_id"]
            await wait_for(lambda: orch.fleet.get_room("r1") is not None, EVENT_TIMEOUT_S)
            room = orch.fleet.get_room("r1")
            assert room is not None and room.connections == 3
            assert room.instance_id == instance_id
            assert dict(room.metadata) == METADATA  # reported by Node, canonical in reads
            while (await node.next("state"))["full"]:
                pass  # the orchestrator polls with the hash it got: hash-only replies follow
            created = await orch.fleet.create_room("match", "from-orch", options={"map": "dust"})
            assert created.id == "from-orch"
            assert (await node.next("create"))["options"] == {"map": "dust"}
