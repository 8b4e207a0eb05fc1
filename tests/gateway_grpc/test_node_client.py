"""Cross-language: a Node.js client (@grpc/grpc-js + proto-loader over our .proto) drives a
live orchestrator with a live agent.

The node packages install once into ``.cache/node-grpc`` (from the committed
package-lock.json, with ``npm ci``); later runs reuse them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from fleet_server import Orchestrator
from tests.support.agents import RawAgents
from tests.support.keys import ADMIN
from tests.support.node import INSTALL_TIMEOUT_S, install_node_packages, needs_node, run

CLIENT_DIR = Path(__file__).resolve().parent / "node"
CLIENT_TIMEOUT_S = 60

pytestmark = needs_node


@pytest.mark.timeout(INSTALL_TIMEOUT_S + CLIENT_TIMEOUT_S + 30)
async def test_a_node_client_reads_creates_and_destroys_over_grpc(
    orch: Orchestrator, agents: RawAgents
) -> None:
    node_modules = await install_node_packages(CLIENT_DIR, "node-grpc")
    agent = await agents(name="node-target", endpoint_url="wss://game.example")
    env = {**os.environ, "NODE_PATH": str(node_modules), "FLEET_ADMIN_KEY": ADMIN}
    code, out, err = await run(
        "node",
        str(CLIENT_DIR / "client.js"),
        f"127.0.0.1:{orch.grpc_port}",
        "match",
        "from-node",
        cwd=CLIENT_DIR,
        env=env,
        timeout=CLIENT_TIMEOUT_S,
    )
    assert code == 0, f"node client failed:\n{out}\n{err}"
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])

    assert result["stats"]["instances"] == 1 and result["stats"]["rooms"] == 0
    assert result["stats"]["room_types"] == ["match"]
    assert result["created"] == {
        "id": "from-node",
        "type": "match",
        "connections": 0,
        "instance_id": agent.instance_id,
        "endpoint_url": "wss://game.example",
        "local": False,
        "metadata": "{}",
        "locked": False,
        "reserved_seats": 0,
    }
    seats = result["seats"]  # the room just created is the one that fits: 2 seats in it
    assert seats["room"]["id"] == "from-node" and seats["created"] is False
    assert seats["room"]["reserved_seats"] == 2 and seats["reservation"]["seats"] == 2
    assert seats["reservation"]["ticket"].startswith("v1.")
    assert result["released"] == {}
    assert result["destroyed"] == {}
    assert result["statsAfter"]["rooms"] == 0
    assert result["statsAfter"]["state_hash"] == orch.fleet.stats.state_hash
    assert result["unauthenticated"] == {"code": "UNAUTHENTICATED", "cause": "UNAUTHORIZED"}
    assert [(c.op, c.room_id) for c in agent.commands] == [
        ("create", "from-node"),
        ("destroy", "from-node"),
    ]
    assert ADMIN not in out and ADMIN not in err
