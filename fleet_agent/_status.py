"""The agent's lifecycle status."""

from __future__ import annotations

import enum
from typing import Final

__all__ = ["LIVE", "AgentStatus"]


class AgentStatus(enum.StrEnum):
    """Where the agent is in its lifecycle; each member equals its plain string.

    ``closed`` → ``connect()`` → ``connecting`` → Hello → ``connected`` (or ``draining``)
    → drop → ``connecting`` → … ; ``disconnect()`` or a fatal error → ``closed``.
    """

    CLOSED = "closed"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    DRAINING = "draining"


LIVE: Final = frozenset({AgentStatus.CONNECTED, AgentStatus.DRAINING})
"""The statuses with a joined connection."""
