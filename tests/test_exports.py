"""The public names of each package are chosen deliberately; this pins them."""

from __future__ import annotations

import fleet_server


def test_fleet_server_exports() -> None:
    assert sorted(fleet_server.__all__) == [
        "Capacity",
        "ErrorCode",
        "FleetError",
        "FleetStats",
        "InstanceInfo",
        "Orchestrator",
        "Placement",
        "RoomInfo",
        "Webhook",  # CONTRACT §14: Orchestrator(webhooks=[Webhook(url, events, secret)])
        "main",
    ]
    for name in fleet_server.__all__:
        assert getattr(fleet_server, name) is not None
    # what Orchestrator.agent_tokens() and .create_agent_token(...) return: importable
    # by name, not in the pinned list
    assert fleet_server.AgentTokenInfo is not None and fleet_server.MintedAgentToken is not None
