"""The agent WebSocket endpoint: ``GET /`` with subprotocol auth (SPEC §3.2)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Final

from aiohttp import hdrs, web

from fleet_agent import wire

from ._auth import Audience, Authenticator
from ._envelope import rejection
from ._errors import ErrorCode, FleetError
from ._fleet import Fleet
from ._ids import mint_instance_id
from ._link import AgentLink, CloseCode, PollIds
from ._metrics import NULL_METER, Meter
from ._phases import PollPhases
from ._turns import TurnBudget

__all__ = ["AgentTransport"]

log = logging.getLogger("fleet.server")

# Above the protocol limit so oversize frames reach our own check (close 4004).
_WS_MAX_MSG: Final = 4 * wire.MAX_FRAME_BYTES
MAX_JOINING: Final = 512
"""Agents admitted at once and not joined yet (upgraded, their first State not handled):
past this, an upgrade is refused with 503 ``NOT_READY`` and ``Retry-After``, so that a
whole fleet reconnecting at once (a takeover) queues at the door instead of on the
event loop, where the agents already joined wait for their polls."""
JOINING_RETRY_AFTER_S: Final = 1


class AgentTransport:
    """Accepts agents, authenticates them and runs an :class:`AgentLink` per socket."""

    def __init__(
        self,
        *,
        fleet: Fleet,
        auth: Authenticator,
        heartbeat_ms: int,
        is_accepting: Callable[[], bool],
        leads: Callable[[], bool] = lambda: True,
        leader_hint: Callable[[], str | None] = lambda: None,
        meter: Meter = NULL_METER,
    ) -> None:
        self._fleet = fleet
        self._meter = meter
        self._auth = auth
        self._heartbeat_ms = heartbeat_ms
        self._accepting = is_accepting
        self._leads = leads
        self._leader_hint = leader_hint
        self._poll_ids = PollIds()
        self.phases = PollPhases(heartbeat_ms / 1000.0)
        self.turns = TurnBudget()
        self._links: set[AgentLink] = set()
        self.closed_links = 0  # agent connections served and ended, ever
        self.max_joining = MAX_JOINING
        self.joining = 0  # admitted, first State not handled yet
        self.refused_joining = 0  # upgrades refused because too many were joining, ever

    @property
    def links(self) -> set[AgentLink]:
        return self._links

    async def handle(self, request: web.Request) -> web.StreamResponse:
        headers = request.headers
        if headers.get(hdrs.UPGRADE, "").lower() != "websocket":
            return rejection(ErrorCode.VALIDATION)
        ip = self._auth.client_ip(request.remote, headers)
        route = f"{request.method} {request.path}"
        try:
            principal = self._auth.authenticate(
                Audience.AGENT, ip, route, _offered_key(headers), log=log
            )
        except FleetError as exc:
            return rejection(exc.code)
        if not self._accepting():
            return rejection(ErrorCode.NOT_READY)
        if not self._leads():  # a standby: the agent goes to the leader's agent URL
            return rejection(ErrorCode.NOT_LEADER, leader=self._leader_hint())
        if self.joining >= self.max_joining:
            self.refused_joining += 1
            return rejection(ErrorCode.NOT_READY, {"Retry-After": str(JOINING_RETRY_AFTER_S)})
        # Only now, with the key checked: aiohttp logs offered subprotocols it refuses.
        ws = web.WebSocketResponse(protocols=(wire.SUBPROTOCOL,), max_msg_size=_WS_MAX_MSG)
        if not ws.can_prepare(request).ok:
            return rejection(ErrorCode.VALIDATION)
        self.joining += 1  # until the link's first State is handled, or it ends
        try:
            await ws.prepare(request)
            link = AgentLink(
                ws,
                mint_instance_id(),
                self._fleet,
                self._heartbeat_ms,
                self._poll_ids,
                ticket_key=self._auth.ticket_key(principal),
                meter=self._meter,
                grant=principal.grant,
                on_first_state=self._joined,
                phases=self.phases,
                turns=self.turns,
                transport=request.transport,
            )
        except BaseException:
            self.joining -= 1
            raise
        self._links.add(link)
        if self._auth.revoked(principal):  # revoked while this upgrade was under way
            await link.close(CloseCode.REVOKED, "credential revoked")
        log.info(
            "agent connected instance=%s ip=%s credential=%s%s",
            link.instance.id,
            ip,
            principal.key_id,
            f" token={principal.grant.id}" if principal.grant is not None else "",
        )
        try:
            await link.run()
        finally:
            self._links.discard(link)
            self.closed_links += 1
            log.info("agent disconnected instance=%s", link.instance.id)
        return ws

    def _joined(self) -> None:
        self.joining -= 1

    def token_instances(self, token_id: str) -> list[str]:
        """The ids of the instances connected with agent token ``token_id`` now."""
        return [link.instance.id for link in self._token_links(token_id)]

    async def revoke(self, token_id: str) -> int:
        """Close every agent connected with agent token ``token_id`` (4011); how many."""
        links = self._token_links(token_id)
        for link in links:
            log.warning("kick instance=%s cause=credential revoked", link.instance.id)
            self._meter.kick("revoked")
        await asyncio.gather(
            *(link.close(CloseCode.REVOKED, "credential revoked") for link in links),
            return_exceptions=True,
        )
        return len(links)

    def _token_links(self, token_id: str) -> list[AgentLink]:
        return [link for link in self._links if link.grant and link.grant.id == token_id]

    async def close_all(
        self, code: int = CloseCode.SHUTDOWN, reason: str = "orchestrator shutdown"
    ) -> None:
        """Tear every agent down (commands fail, events fire), then close the sockets
        (1001 at shutdown, 4010 when this node stops leading)."""
        links = list(self._links)
        for link in links:
            link.teardown(reason)
        await asyncio.gather(*(link.close(code, reason) for link in links), return_exceptions=True)


def _offered_key(headers: Mapping[str, str]) -> str | None:
    """The key among the offered subprotocols: exactly one beside ``rivalis-fleet.v1``."""
    offered = [
        p.strip() for p in headers.get(hdrs.SEC_WEBSOCKET_PROTOCOL, "").split(",") if p.strip()
    ]
    if wire.SUBPROTOCOL not in offered:
        return None
    others = [p for p in offered if p != wire.SUBPROTOCOL]
    return others[0] if len(others) == 1 else None
