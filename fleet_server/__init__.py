"""rivalis-fleet orchestrator: the fleet's read model, placement and commands."""

from fleet_agent import Capacity

# The types Orchestrator's agent-token methods return: importable by name, outside the
# list of exports CONTRACT pins.
from ._agent_token_service import AgentTokenInfo as AgentTokenInfo
from ._agent_tokens import MintedAgentToken as MintedAgentToken
from ._daemon import main
from ._errors import ErrorCode, FleetError
from ._models import FleetStats, InstanceInfo, RoomInfo
from ._orchestrator import Orchestrator
from ._placement import Placement
from ._webhooks import Webhook

__all__ = [
    "Capacity",
    "ErrorCode",
    "FleetError",
    "FleetStats",
    "InstanceInfo",
    "Orchestrator",
    "Placement",
    "RoomInfo",
    "Webhook",
    "main",
]
