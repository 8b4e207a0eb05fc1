"""The public names of each package are chosen deliberately; this pins them."""

from __future__ import annotations

import fleet_server


def test_fleet_server_exports() -> None:
    assert sorted(fleet_server.__all__) == [
        "AgentTokenInfo",  # CONTRACT §13: Orchestrator.agent_tokens()
        "Capacity",
        "ErrorCode",
        "FleetError",
        "FleetStats",
        "InstanceInfo",
        "MintedAgentToken",  # Orchestrator.create_agent_token(...)
        "Orchestrator",
        "Placement",
        "RoomInfo",
        "Webhook",  # CONTRACT §14: Orchestrator(webhooks=[Webhook(url, events, secret)])
        "main",
    ]
    for name in fleet_server.__all__:
        assert getattr(fleet_server, name) is not None
