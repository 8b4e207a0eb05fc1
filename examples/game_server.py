"""A small but real game server that joins a rivalis-fleet orchestrator.

Game clients open a WebSocket to ``<endpoint_url>/rooms/<room_id>``; every text message
is broadcast to the room's other players. Room connection counts flow to the
orchestrator through the embedded :class:`~fleet_agent.FleetAgent`.

Matchmaking (docs/matchmaking.md): each room has ``--seats`` seats (``max_connections``)
and its create options ``map`` and ``mode`` in its metadata; option ``"private": true``
locks it (no seats are handed out for it). A player sent by a matchmaker joins with the
seat ticket of its reservation, ``/rooms/<room_id>?ticket=<ticket>``: a ticket for ``n``
seats admits ``n`` players (a party shares it) until it expires, and its seats count as
connections from the moment it is accepted. A player without a ticket is admitted while
the room is unlocked and has a free seat. Refusals are HTTP 403 ``{"error": reason}``
before the WebSocket upgrade.

    python -m examples.game_server --name eu1 --port 9001 --label region=eu \\
        --orchestrator ws://127.0.0.1:7350 --agent-key "$FLEET_AGENT_KEY"
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence

from aiohttp import WSMsgType, web

from fleet_agent import Capacity, FleetAgent, Room, RoomManager, TicketError

log = logging.getLogger("fleet.example")


class Refused(Exception):
    """A player the room does not admit; ``str()`` is the reason."""


class ChatRoom(Room):
    """A room whose players exchange text messages.

    ``connections`` counts the connected players, the admitted ones still connecting,
    and the seats of party tickets not taken yet (until the ticket expires).
    """

    def __init__(self, room_id: str, room_type: str, seats: int | None = None) -> None:
        super().__init__(room_id, room_type)
        self.max_connections = seats
        self.players: set[web.WebSocketResponse] = set()
        self.arriving = 0
        self.parties: dict[str, tuple[int, int]] = {}
        """Accepted tickets with seats left for the party: ticket -> (seats, expires_at)."""

    async def on_create(self) -> None:
        options = self.options
        self.metadata = {
            "map": str(options.get("map", "default")),
            "mode": str(options.get("mode", "casual")),
        }
        self.locked = options.get("private") is True

    async def on_destroy(self) -> None:
        for ws in list(self.players):
            await ws.close(code=4100, message=b"room destroyed")

    def admit(self, ticket: str | None) -> None:
        """Take a seat for a joining player (then :meth:`join` or :meth:`leave_early`),
        or raise :class:`Refused`. An accepted ticket and its seats are reported in the
        same snapshot, so the orchestrator never counts them twice."""
        self._count()  # drops the seats of expired party tickets
        if ticket is not None:
            self._take_ticket_seat(ticket)
        elif self.locked:
            raise Refused("room is locked")
        elif self.max_connections is not None and self.connections >= self.max_connections:
            raise Refused("room is full")
        self.arriving += 1
        self._count()

    def leave_early(self) -> None:
        """An admitted player went away before its WebSocket was up."""
        self.arriving -= 1
        self._count()

    async def join(self, ws: web.WebSocketResponse) -> None:
        """Serve an admitted player until it leaves."""
        self.arriving -= 1
        self.players.add(ws)
        self._count()
        try:
            async for message in ws:
                if message.type is WSMsgType.TEXT:
                    for other in list(self.players):
                        if other is not ws and not other.closed:
                            await other.send_str(message.data)
        finally:
            self.players.discard(ws)
            self._count()

    def _take_ticket_seat(self, ticket: str) -> None:
        seats, expires_at = self.parties.pop(ticket, (0, 0))
        if seats == 0:
            try:
                reservation = self.accept_ticket(ticket)
            except TicketError as exc:
                raise Refused(str(exc)) from None
            seats, expires_at = reservation.seats, reservation.expires_at
        if seats > 1:
            self.parties[ticket] = (seats - 1, expires_at)

    def _drop_expired_parties(self) -> None:
        now = int(time.time() * 1000)
        for ticket, (_, expires_at) in list(self.parties.items()):
            if expires_at <= now:
                del self.parties[ticket]

    def _count(self) -> None:
        self._drop_expired_parties()
        held = sum(seats for seats, _ in self.parties.values())
        self.connections = len(self.players) + self.arriving + held


def build_rooms(room_types: Sequence[str], seats: int | None) -> RoomManager:
    rooms = RoomManager()
    for room_type in room_types:
        rooms.define(room_type, lambda room_id, kind: ChatRoom(room_id, kind, seats))
    return rooms


def build_app(rooms: RoomManager) -> web.Application:
    async def join_room(request: web.Request) -> web.StreamResponse:
        room = rooms.get(request.match_info["room_id"])
        if not isinstance(room, ChatRoom):
            return web.json_response({"error": "no such room"}, status=404)
        try:
            room.admit(request.query.get("ticket"))
        except Refused as exc:
            return web.json_response({"error": str(exc)}, status=403)
        ws = web.WebSocketResponse(heartbeat=20)
        try:
            await ws.prepare(request)
        except BaseException:
            room.leave_early()
            raise
        await room.join(ws)
        return ws

    async def health(_: web.Request) -> web.Response:
        return web.json_response({"rooms": len(rooms)})

    app = web.Application()
    app.router.add_get("/rooms/{room_id}", join_room)
    app.router.add_get("/", health)
    return app


def _labels(pairs: Sequence[str]) -> dict[str, str]:
    labels: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"game_server: --label must be key=value, got {pair!r}")
        labels[key] = value
    return labels


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m examples.game_server")
    parser.add_argument("--name", required=True, help="instance name shown in the fleet")
    parser.add_argument("--host", default="127.0.0.1", help="address game clients use")
    parser.add_argument("--port", type=int, default=9001, help="game client port (0: any)")
    parser.add_argument("--label", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--room-type", action="append", default=None, dest="room_types")
    parser.add_argument("--max-rooms", type=int, default=None)
    parser.add_argument("--max-connections", type=int, default=None)
    parser.add_argument(
        "--seats", type=int, default=10, help="seats per room (max_connections); 0: unlimited"
    )
    parser.add_argument(
        "--orchestrator",
        default=os.environ.get("FLEET_URL", "ws://127.0.0.1:7350"),
        help="orchestrator URL, or a comma-separated list of them in dial order (env FLEET_URL)",
    )
    parser.add_argument(
        "--agent-key",
        default=os.environ.get("FLEET_AGENT_KEY"),
        help="agent key or agent token (env FLEET_AGENT_KEY)",
    )
    args = parser.parse_args(argv)
    if not args.agent_key:
        parser.error("an agent key is required (--agent-key or FLEET_AGENT_KEY)")
    return args


async def serve(args: argparse.Namespace) -> None:
    rooms = build_rooms(args.room_types or ["match", "lobby"], args.seats or None)
    runner = web.AppRunner(build_app(rooms), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, args.host, args.port)
    await site.start()
    port = runner.addresses[0][1]
    endpoint = f"ws://{args.host}:{port}"
    agent = FleetAgent(
        rooms,
        url=[url.strip() for url in args.orchestrator.split(",") if url.strip()],
        key=args.agent_key,
        endpoint_url=endpoint,
        name=args.name,
        labels=_labels(args.label),
        capacity=Capacity(max_rooms=args.max_rooms, max_connections=args.max_connections),
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await agent.connect()
    print(
        f"game server {args.name} ready endpoint={endpoint} instance={agent.instance_id}",
        flush=True,
    )
    try:
        await stop.wait()
    finally:
        await agent.disconnect()
        await rooms.shutdown()
        await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="[%(levelname)s] %(name)s ▸ %(message)s"
    )
    asyncio.run(serve(parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
