"""rivalis-fleet orchestrator: the fleet's read model, placement and commands."""

from fleet_agent import Capacity

from ._agent_token_service import AgentTokenInfo
from ._agent_tokens import MintedAgentToken
from ._daemon import main
from ._errors import ErrorCode, FleetError
from ._models import FleetStats, InstanceInfo, RoomInfo
from ._orchestrator import Orchestrator
from ._placement import Placement
from ._webhooks import Webhook

__all__ = [
    "AgentTokenInfo",
    "Capacity",
    "ErrorCode",
    "FleetError",
    "FleetStats",
    "InstanceInfo",
    "MintedAgentToken",
    "Orchestrator",
    "Placement",
    "RoomInfo",
    "Webhook",
    "main",
]
