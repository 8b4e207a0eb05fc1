"""The REST ``/v1`` routes and the health routes (CONTRACT §4, SPEC §10).

Handlers translate HTTP onto the orchestrator's fleet service and back: they parse
(:mod:`._parsing`), call the fleet service, and answer with the envelope. The route
table (:meth:`RestApi.routes`) is the single list of what is served; the guard
(:mod:`._middleware`), wrapped around every handler, supplies auth, limits and error
mapping.

``{id}`` and ``{roomId}`` are taken verbatim from the raw request path, never
percent-decoded: public room ids are themselves percent-encoded (``caf%C3%A9``,
``p_x~a%2Fb``), so the client sends them as they are listed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler

from fleet_server._interfaces import (
    AgentTokenService,
    Authenticator,
    ClusterService,
    ErrorCode,
    FleetService,
    FleetStats,
    InstanceInfo,
    RoomInfo,
    Services,
    rejection,
)

from ._cors import install_cors
from ._envelope import (
    encode,
    envelope,
    found,
    json_body,
    json_headers,
    ok,
    rejected,
    room_body,
)
from ._middleware import CONTEXT, GUARD, AuthMode, Guard, RoutePolicy, raw_path
from ._openapi import serve_document
from ._paging import page
from ._parsing import (
    agent_token_body,
    capacity_params,
    create_room_body,
    page_params,
    room_filter,
    seat_body,
    token_body,
)
from ._sse import EventStreams

__all__ = [
    "RestApi",
    "Route",
    "install_guard",
    "mount_agents",
    "mount_health",
    "mount_rest",
]


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    path: str
    handler: Handler
    auth: AuthMode = AuthMode.ADMIN
    audited: bool = False
    reads_body: bool = False
    any_role: bool = False  # served by a standby too (every other /v1 route: NOT_LEADER)
    keys_only: bool = False  # an API token is refused with FORBIDDEN


def etag(state_hash: str) -> str:
    return f'W/"{state_hash}"'


def not_modified(request: web.Request, tag: str) -> bool:
    """``If-None-Match`` is ``*`` or a list holding exactly ``tag``."""
    header = request.headers.get(hdrs.IF_NONE_MATCH)
    if header is None:
        return False
    if header == tag:
        return True
    return any(item.strip() in ("*", tag) for item in header.split(","))


def path_params(request: web.Request) -> dict[str, str]:
    """The route's ``{name}`` segments exactly as the raw path spells them."""
    template = request.match_info.route.resource
    canonical = template.canonical if template is not None else ""
    wanted = canonical.split("/")
    sent = raw_path(request).split("/")
    if len(wanted) != len(sent):
        raise web.HTTPNotFound()
    params: dict[str, str] = {}
    for want, got in zip(wanted, sent, strict=True):
        if want.startswith("{") and want.endswith("}"):
            if not got:
                raise web.HTTPNotFound()
            params[want[1:-1]] = got
        elif want != got:
            raise web.HTTPNotFound()
    return params


class RestApi:
    """The handlers of one app, over one fleet service."""

    def __init__(
        self,
        fleet: FleetService,
        streams: EventStreams,
        cluster: ClusterService,
        auth: Authenticator,
        agent_tokens: AgentTokenService,
    ) -> None:
        self._fleet = fleet
        self._agent_tokens = agent_tokens
        self._streams = streams
        self._cluster = cluster
        self._auth = auth
        self._bodies: dict[str, tuple[str, bytes]] = {}
        # the FleetStats last served, its tag, body and headers
        self._stats: tuple[FleetStats | None, str, bytes, dict[str, str]] = (None, "", b"", {})

    def routes(self) -> list[Route]:
        return [
            Route("GET", "/v1/openapi.json", serve_document, auth=AuthMode.NONE),
            Route("GET", "/v1/cluster", self.cluster, any_role=True),
            Route("GET", "/v1/stats", self.stats),
            Route("GET", "/v1/capacity", self.capacity),
            Route("GET", "/v1/instances", self.instances),
            Route("GET", "/v1/instances/{id}", self.instance),
            Route("GET", "/v1/instances/{id}/rooms", self.instance_rooms),
            Route("POST", "/v1/instances/{id}/drain", self.drain, audited=True),
            Route("POST", "/v1/instances/{id}/undrain", self.undrain, audited=True),
            Route("GET", "/v1/rooms", self.rooms),
            Route("POST", "/v1/rooms", self.create_room, audited=True, reads_body=True),
            Route("GET", "/v1/rooms/{roomId}", self.room),
            Route("DELETE", "/v1/rooms/{roomId}", self.destroy_room, audited=True),
            Route("POST", "/v1/seats", self.reserve_seats, audited=True, reads_body=True),
            Route("DELETE", "/v1/seats/{reservationId}", self.release_seats, audited=True),
            Route("GET", "/v1/events", self._streams.handle, auth=AuthMode.ADMIN_OR_QUERY),
            Route(
                "POST",
                "/v1/tokens",
                self.create_token,
                audited=True,
                reads_body=True,
                keys_only=True,
            ),
            Route(
                "POST",
                "/v1/agent-tokens",
                self.create_agent_token,
                audited=True,
                reads_body=True,
            ),
            Route("GET", "/v1/agent-tokens", self.agent_tokens),
            Route("DELETE", "/v1/agent-tokens/{id}", self.revoke_agent_token, audited=True),
        ]

    def _cached_body(self, name: str, state_hash: str, build: Callable[[], Any]) -> bytes:
        """A serialized body that changes only with the state hash, built once per hash."""
        cached = self._bodies.get(name)
        if cached is not None and cached[0] == state_hash:
            return cached[1]
        body = encode(build())
        self._bodies[name] = (state_hash, body)
        return body

    def _page(
        self,
        rows: Sequence[InstanceInfo | RoomInfo],
        limit: int | None,
        cursor: str | None,
        headers: Mapping[str, str] | None = None,
    ) -> web.Response:
        """One page of a list read in the envelope, with ``count`` and ``nextCursor``."""
        result = page(rows, self._fleet.position, limit, cursor)
        return ok(
            [row.to_dict() for row in result.rows],
            count=result.count,
            next_cursor=result.next_cursor,
            headers=headers,
        )

    # --- reads ------------------------------------------------------------------

    async def cluster(self, request: web.Request) -> web.StreamResponse:
        return ok(self._cluster.info())

    async def capacity(self, request: web.Request) -> web.StreamResponse:
        group_by, room_type = capacity_params(request.query)
        rows = self._fleet.capacity(group_by, room_type)
        return ok([row.to_dict() for row in rows], count=len(rows))

    async def stats(self, request: web.Request) -> web.StreamResponse:
        stats = self._fleet.stats
        cached = self._stats
        if cached[0] is not stats:  # the read model keeps one FleetStats per state
            tag = etag(stats.state_hash)
            body = encode(envelope(stats.to_dict()))
            cached = self._stats = (stats, tag, body, json_headers({hdrs.ETAG: tag}))
        if hdrs.IF_NONE_MATCH in request.headers and not_modified(request, cached[1]):
            return web.Response(status=304, headers={hdrs.ETAG: cached[1]})
        return web.Response(body=cached[2], headers=cached[3])

    async def instances(self, request: web.Request) -> web.StreamResponse:
        limit, cursor = page_params(request.query)
        fleet = self._fleet
        tag = etag(fleet.state_hash)
        if not_modified(request, tag):
            return web.Response(status=304, headers={hdrs.ETAG: tag})
        return self._page(fleet.instances, limit, cursor, {hdrs.ETAG: tag})

    async def instance(self, request: web.Request) -> web.StreamResponse:
        info = self._fleet.get_instance(path_params(request)["id"])
        return ok(found(info, ErrorCode.INSTANCE_NOT_FOUND).to_dict())

    async def instance_rooms(self, request: web.Request) -> web.StreamResponse:
        instance_id = path_params(request)["id"]
        limit, cursor = page_params(request.query)
        info = found(self._fleet.get_instance(instance_id), ErrorCode.INSTANCE_NOT_FOUND)
        return self._page(info.rooms, limit, cursor)

    async def rooms(self, request: web.Request) -> web.StreamResponse:
        where = room_filter(request.query)
        limit, cursor = page_params(request.query)
        fleet = self._fleet
        state_hash = fleet.state_hash
        tag = etag(state_hash)
        if not_modified(request, tag):
            return web.Response(status=304, headers={hdrs.ETAG: tag})
        if where.empty and limit is None:  # the common read: one body per state hash
            rooms = fleet.rooms
            body = self._cached_body(
                "rooms",
                state_hash,
                lambda: envelope([room.to_dict() for room in rooms], count=len(rooms)),
            )
            return json_body(body, headers={hdrs.ETAG: tag})
        rows = fleet.find_rooms(type=where.type, labels=where.labels, instance_id=where.instance_id)
        rows = [room for room in rows if where.keeps(room)]
        return self._page(rows, limit, cursor, {hdrs.ETAG: tag})

    async def room(self, request: web.Request) -> web.StreamResponse:
        info = self._fleet.get_room(path_params(request)["roomId"])
        return ok(found(info, ErrorCode.ROOM_NOT_FOUND).to_dict())

    # --- control ----------------------------------------------------------------

    async def create_room(self, request: web.Request) -> web.StreamResponse:
        create = create_room_body(request[CONTEXT].body, request.content_type)
        room = await self._fleet.create_room(
            create.type, room_id=create.room_id, placement=create.placement, options=create.options
        )
        return json_body(room_body(room), status=201)

    async def reserve_seats(self, request: web.Request) -> web.StreamResponse:
        body = seat_body(request[CONTEXT].body, request.content_type)
        grant = await self._fleet.reserve_seats(
            body.type,
            body.seats,
            metadata=body.metadata,
            placement=body.placement,
            create=body.create,
            ttl_ms=body.ttl_ms,
        )
        return ok(grant.to_dict(), status=201 if grant.created else 200)

    async def release_seats(self, request: web.Request) -> web.StreamResponse:
        self._fleet.release_seats(path_params(request)["reservationId"])
        return ok()

    async def destroy_room(self, request: web.Request) -> web.StreamResponse:
        await self._fleet.destroy_room(path_params(request)["roomId"])
        return ok()

    async def drain(self, request: web.Request) -> web.StreamResponse:
        await self._fleet.drain_instance(path_params(request)["id"])
        return ok()

    async def undrain(self, request: web.Request) -> web.StreamResponse:
        await self._fleet.undrain_instance(path_params(request)["id"])
        return ok()

    async def create_token(self, request: web.Request) -> web.StreamResponse:
        scope, ttl_s = token_body(request[CONTEXT].body, request.content_type)
        minted = self._auth.mint_token(scope, ttl_s)
        return ok(minted.to_dict(), status=201, headers={hdrs.CACHE_CONTROL: "no-store"})

    async def create_agent_token(self, request: web.Request) -> web.StreamResponse:
        body = agent_token_body(request[CONTEXT].body, request.content_type)
        minted = self._agent_tokens.create(body.name, body.labels, body.ttl_s)
        return ok(minted.to_dict(), status=201, headers={hdrs.CACHE_CONTROL: "no-store"})

    async def agent_tokens(self, request: web.Request) -> web.StreamResponse:
        rows = self._agent_tokens.list()
        return ok([row.to_dict() for row in rows], count=len(rows))

    async def revoke_agent_token(self, request: web.Request) -> web.StreamResponse:
        await self._agent_tokens.revoke(path_params(request)["id"])
        return ok()


def install_guard(app: web.Application, services: Services) -> Guard:
    """The app's guard, made on first use; it adds its last route when the app starts."""
    guard = app.get(GUARD)
    if guard is None:
        guard = app[GUARD] = Guard(services)

        async def add_fallback(app: web.Application) -> None:
            guard.add_fallback(app)

        app.on_startup.append(add_fallback)
    return guard


def mount_health(app: web.Application, services: Services) -> None:
    """``GET /healthz`` and ``GET /readyz`` (no auth, never throttled), and the envelope
    for every failure on ``app`` — unknown routes and wrong methods included."""
    guard = install_guard(app, services)
    is_ready = services.is_ready
    cluster = services.cluster

    async def healthz(request: web.Request) -> web.StreamResponse:
        return ok()

    async def readyz(request: web.Request) -> web.StreamResponse:
        if not is_ready():
            return rejected(ErrorCode.NOT_READY)
        if not cluster.leads():  # a standby is healthy but serves nothing
            return rejection(ErrorCode.NOT_LEADER, leader=cluster.leader_hint("api"))
        return ok()

    guard.add(app, "GET", "/healthz", healthz)
    guard.add(app, "GET", "/readyz", readyz)


def mount_agents(app: web.Application, services: Services, handler: Handler) -> None:
    """The agent endpoint alone at ``/``, behind the guard (the API off: no dashboard)."""
    install_guard(app, services).add(app, "GET", "/", handler, head=True)


def mount_rest(app: web.Application, services: Services) -> Callable[[], Awaitable[None]]:
    """The REST ``/v1`` routes, the SSE stream and CORS on ``app``.

    Returns the coroutine function that ends every SSE stream; the orchestrator runs
    it first at shutdown.
    """
    options = services.options
    guard = install_guard(app, services)
    guard.cors = install_cors(app, options.cors_origins)
    streams = EventStreams(
        services.hub, limit=options.sse_stream_limit, ping_ms=options.sse_ping_ms
    )
    api = RestApi(services.fleet, streams, services.cluster, services.auth, services.agent_tokens)
    for route in api.routes():
        policy = RoutePolicy(
            route.auth, route.audited, route.reads_body, route.any_role, route.keys_only
        )
        guard.add(app, route.method, route.path, route.handler, policy)
    return streams.close
