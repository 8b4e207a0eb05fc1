"""The agent and admin keys every test orchestrator and daemon is started with."""

from __future__ import annotations

KEY = "agent-key-0123456789abcdef"
ADMIN = "admin-key-0123456789abcdef"
