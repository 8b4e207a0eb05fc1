"""Cross-language: a Node.js client (@grpc/grpc-js + proto-loader over our .proto) drives a
live orchestrator with a live agent.

The node packages install once into ``.cache/node-grpc`` (from the committed
package-lock.json, with ``npm ci``); later runs reuse them.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from fleet_server import Orchestrator
from tests.support.agents import RawAgents
from tests.support.keys import ADMIN

ROOT = Path(__file__).resolve().parents[2]
CLIENT_DIR = Path(__file__).resolve().parent / "node"
CACHE = ROOT / ".cache" / "node-grpc"
PACKAGE_FILES = ("package.json", "package-lock.json")
INSTALL_TIMEOUT_S = 300
CLIENT_TIMEOUT_S = 60

pytestmark = pytest.mark.skipif(
    shutil.which("node") is None or shutil.which("npm") is None,
    reason="Node.js and npm are needed for the cross-language test",
)


async def _run(*args: str, cwd: Path, env: dict[str, str], timeout: float) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *args,
        cwd=cwd,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise AssertionError(f"{' '.join(args[:2])} took over {timeout} s") from None
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def _installed() -> bool:
    marker = CACHE / "node_modules" / ".package-lock.json"
    return marker.exists() and all(
        (CACHE / name).exists() and (CACHE / name).read_bytes() == (CLIENT_DIR / name).read_bytes()
        for name in PACKAGE_FILES
    )


async def _install_node_packages() -> Path:
    """``npm ci`` into the cache unless the same lock is already installed there."""
    if _installed():
        return CACHE / "node_modules"
    staging = CACHE.with_name(f"{CACHE.name}.{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for name in PACKAGE_FILES:
        shutil.copy2(CLIENT_DIR / name, staging / name)
    env = {**os.environ, "npm_config_update_notifier": "false"}
    code, out, err = await _run(
        "npm",
        "ci",
        "--ignore-scripts",
        "--no-audit",
        "--no-fund",
        "--prefix",
        str(staging),
        cwd=staging,
        env=env,
        timeout=INSTALL_TIMEOUT_S,
    )
    if code != 0:
        shutil.rmtree(staging, ignore_errors=True)
        raise AssertionError(f"npm ci failed ({code}):\n{out}\n{err}")
    shutil.rmtree(CACHE, ignore_errors=True)
    staging.rename(CACHE)
    return CACHE / "node_modules"


@pytest.mark.timeout(INSTALL_TIMEOUT_S + CLIENT_TIMEOUT_S + 30)
async def test_a_node_client_reads_creates_and_destroys_over_grpc(
    orch: Orchestrator, agents: RawAgents
) -> None:
    node_modules = await _install_node_packages()
    agent = await agents(name="node-target", endpoint_url="wss://game.example")
    env = {**os.environ, "NODE_PATH": str(node_modules), "FLEET_ADMIN_KEY": ADMIN}
    code, out, err = await _run(
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
