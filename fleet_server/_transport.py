"""The agent WebSocket endpoint: ``GET /`` with subprotocol auth (SPEC §3.2)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Final

from aiohttp import hdrs, web

from fleet_agent import wire

from ._auth import AuthThrottle, KeyRing
from ._errors import ErrorCode
from ._fleet import Fleet
from ._ids import mint_instance_id
from ._link import AgentLink, CloseCode, PollIds

__all__ = ["AgentTransport", "client_ip", "rejection"]

log = logging.getLogger("fleet.server")

# Above the protocol limit so oversize frames reach our own check (close 4004).
_WS_MAX_MSG: Final = 4 * wire.MAX_FRAME_BYTES


def rejection(code: ErrorCode, status: int, headers: dict[str, str] | None = None) -> web.Response:
    """The uniform failure envelope, ``{"status":"rejected","cause":"<CODE>"}``."""
    return web.Response(
        body=b'{"status":"rejected","cause":"' + code.value.encode() + b'"}',
        status=status,
        headers=headers,
        content_type="application/json",
        charset="utf-8",
    )


def client_ip(request: web.Request, trust_proxy: bool) -> str:
    if trust_proxy:
        forwarded = request.headers.get("X-Forwarded-For")
        if forwarded:
            first = forwarded.split(",", 1)[0].strip()
            if first:
                return first
    return request.remote or "unknown"


class AgentTransport:
    """Accepts agents, authenticates them and runs an :class:`AgentLink` per socket."""

    def __init__(
        self,
        *,
        fleet: Fleet,
        agent_keys: KeyRing,
        throttle: AuthThrottle,
        heartbeat_ms: int,
        trust_proxy: bool,
        is_accepting: Callable[[], bool],
    ) -> None:
        self._fleet = fleet
        self._keys = agent_keys
        self._throttle = throttle
        self._heartbeat_ms = heartbeat_ms
        self._trust_proxy = trust_proxy
        self._accepting = is_accepting
        self._poll_ids = PollIds()
        self._links: set[AgentLink] = set()
        self.closed_links = 0  # agent connections served and ended, ever

    @property
    def links(self) -> set[AgentLink]:
        return self._links

    def _authenticate(self, request: web.Request) -> bool:
        offered = [
            p.strip()
            for p in request.headers.get(hdrs.SEC_WEBSOCKET_PROTOCOL, "").split(",")
            if p.strip()
        ]
        if wire.SUBPROTOCOL not in offered:
            return False
        others = [p for p in offered if p != wire.SUBPROTOCOL]
        return len(others) == 1 and self._keys.match(others[0]) is not None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get(hdrs.UPGRADE, "").lower() != "websocket":
            return rejection(ErrorCode.VALIDATION, 400)
        ip = client_ip(request, self._trust_proxy)
        route = f"{request.method} {request.path}"
        if self._throttle.blocked(ip):
            log.warning("auth throttled ip=%s route=%s", ip, route)
            return rejection(ErrorCode.AUTH_THROTTLED, 429)
        if not self._authenticate(request):
            self._throttle.failure(ip)
            log.warning("auth failed ip=%s route=%s", ip, route)
            return rejection(ErrorCode.UNAUTHORIZED, 401)
        if not self._accepting():
            return rejection(ErrorCode.NOT_READY, 503)
        # Only now, with the key checked: aiohttp logs offered subprotocols it refuses.
        ws = web.WebSocketResponse(
            protocols=(wire.SUBPROTOCOL,), max_msg_size=_WS_MAX_MSG, autoping=True
        )
        if not ws.can_prepare(request).ok:
            return rejection(ErrorCode.VALIDATION, 400)
        await ws.prepare(request)
        link = AgentLink(ws, mint_instance_id(), self._fleet, self._heartbeat_ms, self._poll_ids)
        self._links.add(link)
        log.info("agent connected instance=%s ip=%s", link.instance.id, ip)
        try:
            await link.run()
        finally:
            self._links.discard(link)
            self.closed_links += 1
            log.info("agent disconnected instance=%s", link.instance.id)
        return ws

    async def close_all(self) -> None:
        """Tear every agent down (commands fail, events fire), then close sockets with 1001."""
        links = list(self._links)
        for link in links:
            link.teardown("orchestrator shutdown")
        await asyncio.gather(
            *(link.close(CloseCode.SHUTDOWN, "orchestrator shutdown") for link in links),
            return_exceptions=True,
        )
