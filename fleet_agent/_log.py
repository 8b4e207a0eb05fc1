"""The agent's logger: ``fleet.agent``. The library never configures handlers."""

from __future__ import annotations

import logging

__all__ = ["logger"]

logger = logging.getLogger("fleet.agent")
