"""Agent tokens as the API and the Python facade serve them (CONTRACT §13).

Minting checks what a token may bind against the snapshot's own limits; revoking kicks
the agents that hold the token (close 4011) and answers once the membership record
holding the revocation is written. Audit lines name tokens by id and fingerprint only.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from fleet_agent.wire import MAX_LABEL_KEY, MAX_LABEL_VALUE, MAX_LABELS, MAX_NAME

from ._agent_tokens import (
    DEFAULT_AGENT_TTL_S,
    AgentTokenBook,
    AgentTokenRecord,
    MintedAgentToken,
    agent_token_fingerprint,
)
from ._errors import ErrorCode, FleetError

__all__ = ["AgentTokenInfo", "AgentTokenService"]

audit_log = logging.getLogger("fleet.audit")


@dataclass(frozen=True, slots=True)
class AgentTokenInfo:
    """A token as listed: what it binds, its times, and who holds it now; no secret."""

    id: str
    name: str | None
    labels: Mapping[str, str]
    created_at: int
    expires_at: int
    revoked_at: int | None
    instances: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "labels": dict(self.labels),
            "createdAt": self.created_at,
            "expiresAt": self.expires_at,
            "revokedAt": self.revoked_at,
            "instances": list(self.instances),
        }


class AgentTokenService:
    """Mint, list and revoke; ``book`` is None when ``agent_tokens`` is off."""

    def __init__(
        self,
        book: AgentTokenBook | None,
        *,
        holders: Callable[[str], list[str]],
        kick: Callable[[str], Awaitable[int]],
        flush: Callable[[], Awaitable[bool]],
        leads: Callable[[], bool],
    ) -> None:
        self._book = book
        self._holders = holders
        self._kick = kick
        self._flush = flush
        self._leads = leads

    def create(
        self,
        name: str | None = None,
        labels: Mapping[str, str] | None = None,
        ttl_s: int | None = None,
    ) -> MintedAgentToken:
        book = self._writable()
        _check_binding(name, labels)
        try:
            minted = book.mint(name, labels, DEFAULT_AGENT_TTL_S if ttl_s is None else ttl_s)
        except ValueError as exc:
            raise FleetError(ErrorCode.VALIDATION, str(exc)) from None
        audit_log.info(
            "agent token minted id=%s fingerprint=%s name=%s labels=%s expiresAt=%d",
            minted.id,
            agent_token_fingerprint(minted.token),
            name if name is not None else "-",
            ",".join(f"{k}={v}" for k, v in sorted((labels or {}).items())) or "-",
            minted.expires_at,
        )
        return minted

    def list(self) -> list[AgentTokenInfo]:
        book = self._book
        if book is None:
            return []
        return [self._info(record) for record in book.records()]

    async def revoke(self, token_id: str) -> None:
        book = self._writable()
        if not book.revoke(token_id):
            raise FleetError(ErrorCode.NOT_FOUND, "agent token not found")
        kicked = await self._kick(token_id)
        stored = await self._flush()
        audit_log.info(
            "agent token revoked id=%s kicked=%d stored=%s", token_id, kicked, str(stored).lower()
        )

    def _writable(self) -> AgentTokenBook:
        if self._book is None:
            raise FleetError(ErrorCode.FORBIDDEN, "agent tokens are turned off (agent_tokens)")
        if not self._leads():
            raise FleetError(ErrorCode.NOT_LEADER, "this node is not the leader")
        return self._book

    def _info(self, record: AgentTokenRecord) -> AgentTokenInfo:
        return AgentTokenInfo(
            record.id,
            record.name,
            record.labels,
            record.created_at,
            record.expires_at,
            record.revoked_at,
            tuple(sorted(self._holders(record.id))),
        )


def _check_binding(name: str | None, labels: Mapping[str, str] | None) -> None:
    """The limits a snapshot's name and labels have (SPEC §3.4), for what a token binds."""
    if name is not None and (not isinstance(name, str) or not 0 < len(name) <= MAX_NAME):
        raise FleetError(ErrorCode.VALIDATION, f"name must be 1 to {MAX_NAME} characters")
    if labels is None:
        return
    if not isinstance(labels, Mapping) or len(labels) > MAX_LABELS:
        raise FleetError(
            ErrorCode.VALIDATION, f"labels must be an object of at most {MAX_LABELS} entries"
        )
    for key, value in labels.items():
        if not isinstance(key, str) or not 0 < len(key) <= MAX_LABEL_KEY:
            raise FleetError(
                ErrorCode.VALIDATION, f"label keys must be 1 to {MAX_LABEL_KEY} characters"
            )
        if not isinstance(value, str) or len(value) > MAX_LABEL_VALUE:
            raise FleetError(
                ErrorCode.VALIDATION,
                f"label values must be strings of at most {MAX_LABEL_VALUE} characters",
            )
