"""rivalis-fleet orchestrator: the fleet's read model, placement and commands."""

from fleet_agent import Capacity

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
