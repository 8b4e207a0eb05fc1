"""Embedded orchestrators on ephemeral ports and what tests ask of them; the environment
of a daemon run as a subprocess."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from typing import Any

from fleet_server import Orchestrator
from fleet_server._link import AgentLink

from .keys import ADMIN, KEY
from .waits import wait_for


def agent_url(port: int) -> str:
    """Where agents dial an orchestrator listening on ``port`` of 127.0.0.1."""
    return f"ws://127.0.0.1:{port}/"


def daemon_env(port: int, heartbeat_ms: int) -> dict[str, str]:
    """The ``FLEET_*`` settings of a daemon on 127.0.0.1:``port`` with the test keys and
    no gRPC."""
    return {
        "FLEET_AGENT_KEY": KEY,
        "FLEET_ADMIN_KEY": ADMIN,
        "FLEET_HOST": "127.0.0.1",
        "FLEET_PORT": str(port),
        "FLEET_GRPC_PORT": "off",
        "FLEET_HEARTBEAT_MS": str(heartbeat_ms),
    }


def env_without_fleet(**extra: str) -> dict[str, str]:
    """This process's environment without its ``FLEET_*`` settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEET_")}
    env.update(extra)
    return env


def new_orchestrator(**options: Any) -> Orchestrator:
    """An orchestrator on 127.0.0.1 (port 0 unless given) with the test keys; not listening."""
    options.setdefault("host", "127.0.0.1")
    options.setdefault("port", 0)
    options.setdefault("agent_key", KEY)
    options.setdefault("admin_key", ADMIN)
    return Orchestrator(**options)


@contextlib.asynccontextmanager
async def running_orchestrator(**options: Any) -> AsyncIterator[Orchestrator]:
    """A listening orchestrator (the API off unless asked for), shut down on exit."""
    options.setdefault("api", False)
    orch = new_orchestrator(**options)
    await orch.listen()
    try:
        yield orch
    finally:
        await orch.shutdown()


async def listed(orch: Orchestrator, instance_id: str, timeout: float = 5.0) -> None:
    """Wait until ``instance_id`` is in the orchestrator's read model."""
    await wait_for(lambda: orch.fleet.get_instance(instance_id) is not None, timeout)


def link_of(orch: Orchestrator, instance_id: str) -> AgentLink:
    """The orchestrator's live link to ``instance_id``."""
    return next(link for link in orch.transport.links if link.instance.id == instance_id)
