"""The public surface of fleet_agent is pinned."""

from __future__ import annotations

import subprocess
import sys

import fleet_agent
from fleet_agent import (
    AgentStatus,
    FleetAgentError,
    RoomExistsError,
    TicketError,
    UnknownRoomTypeError,
)
from fleet_agent._errors import AgentTimeoutError, ConnectionClosedError, ProtocolMismatchError


def test_all_is_the_curated_sorted_list() -> None:
    assert fleet_agent.__all__ == [
        "AgentStatus",
        "Backoff",
        "Capacity",
        "FleetAgent",
        "FleetAgentError",
        "Room",
        "RoomExistsError",
        "RoomHost",
        "RoomManager",
        "RoomView",
        "SeatReservation",
        "TicketError",
        "UnknownRoomTypeError",
    ]
    for name in fleet_agent.__all__:
        assert getattr(fleet_agent, name).__module__.startswith("fleet_agent._")


def test_status_members_equal_plain_strings() -> None:
    assert [str(s) for s in AgentStatus] == ["closed", "connecting", "connected", "draining"]
    status: AgentStatus = AgentStatus.CONNECTED
    assert status == "connected" and status != "closed"
    assert AgentStatus("draining") is AgentStatus.DRAINING


def test_errors_share_one_root_and_timeouts_are_timeout_errors() -> None:
    for cls in (
        AgentTimeoutError,
        ConnectionClosedError,
        ProtocolMismatchError,
        RoomExistsError,
        TicketError,
        UnknownRoomTypeError,
    ):
        assert issubclass(cls, FleetAgentError)
    assert issubclass(TicketError, ValueError)
    assert issubclass(AgentTimeoutError, TimeoutError)
    assert "99" in str(ProtocolMismatchError(99, 3)) and "3" in str(ProtocolMismatchError(99, 3))


def test_the_agent_never_imports_the_orchestrator() -> None:
    code = (
        "import sys, fleet_agent, fleet_agent.wire; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('fleet_server', 'gateway')]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
