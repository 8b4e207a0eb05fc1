"""A small but real game server that joins a rivalis-fleet orchestrator.

Game clients open a WebSocket to ``<endpoint_url>/rooms/<room_id>``; every text message
is broadcast to the room's other players. Room connection counts flow to the
orchestrator through the embedded :class:`~fleet_agent.FleetAgent`.

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
from collections.abc import Sequence

from aiohttp import WSMsgType, web

from fleet_agent import Capacity, FleetAgent, Room, RoomManager

log = logging.getLogger("fleet.example")


class ChatRoom(Room):
    """A room whose players exchange text messages."""

    def __init__(self, room_id: str, room_type: str) -> None:
        super().__init__(room_id, room_type)
        self.players: set[web.WebSocketResponse] = set()

    async def on_destroy(self) -> None:
        for ws in list(self.players):
            await ws.close(code=4100, message=b"room destroyed")

    async def join(self, ws: web.WebSocketResponse) -> None:
        self.players.add(ws)
        self.connections = len(self.players)
        try:
            async for message in ws:
                if message.type is WSMsgType.TEXT:
                    for other in list(self.players):
                        if other is not ws and not other.closed:
                            await other.send_str(message.data)
        finally:
            self.players.discard(ws)
            self.connections = len(self.players)


def build_app(rooms: RoomManager) -> web.Application:
    async def join_room(request: web.Request) -> web.StreamResponse:
        room = rooms.get(request.match_info["room_id"])
        if not isinstance(room, ChatRoom):
            return web.json_response({"error": "no such room"}, status=404)
        ws = web.WebSocketResponse(heartbeat=20)
        await ws.prepare(request)
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
        "--orchestrator",
        default=os.environ.get("FLEET_URL", "ws://127.0.0.1:7350"),
        help="orchestrator URL, or a comma-separated list of them in dial order (env FLEET_URL)",
    )
    parser.add_argument(
        "--agent-key",
        default=os.environ.get("FLEET_AGENT_KEY"),
        help="agent key (env FLEET_AGENT_KEY)",
    )
    args = parser.parse_args(argv)
    if not args.agent_key:
        parser.error("an agent key is required (--agent-key or FLEET_AGENT_KEY)")
    return args


async def serve(args: argparse.Namespace) -> None:
    rooms = RoomManager()
    for room_type in args.room_types or ["match", "lobby"]:
        rooms.define(room_type, ChatRoom)
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
