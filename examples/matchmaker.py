"""A matchmaker on ``fleet_client``: seats for a stream of parties, and each party joins
its game server with its ticket (docs/fleet-client.md, docs/matchmaking.md).

    python -m examples.matchmaker --url http://127.0.0.1:7350 --key "$FLEET_ADMIN_KEY" \\
        --parties 20 --mode ranked

Each party (1 to 4 players) gets seats in the fullest ``match`` room whose metadata has
its ``mode``, or in a new room made with that mode; then its players connect to
``<endpointUrl>/rooms/<roomId>?ticket=<ticket>`` on the example game server
(``examples/game_server.py``) unless ``--no-join``. One JSON line per party is printed:
``{"party", "players", "room", "endpoint", "created", "joined"}``. Retries, the leader
and a failover are the client's business: list every node with ``--url``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
from collections.abc import Sequence

import aiohttp

from fleet_client import FleetClient, FleetClientError, SeatGrant

ROOM_TYPE = "match"


async def seat_party(fleet: FleetClient, mode: str, players: int) -> SeatGrant:
    """Seats for ``players`` in a room of ``mode``: an open one, or a new one."""
    return await fleet.reserve_seats(
        ROOM_TYPE,
        players,
        metadata={"mode": mode},
        create={"options": {"mode": mode}},
        ttl_ms=30_000,
    )


async def join(
    players: aiohttp.ClientSession, grant: SeatGrant, count: int
) -> list[aiohttp.ClientWebSocketResponse]:
    """Connect the party's players to the game server with their ticket."""
    url = f"{grant.room.endpoint_url}/rooms/{grant.room.id}"
    params = {"ticket": grant.reservation.ticket}
    return [await players.ws_connect(url, params=params) for _ in range(count)]


async def run(args: argparse.Namespace) -> int:
    rng = random.Random(args.seed)
    sockets: list[aiohttp.ClientWebSocketResponse] = []
    async with (
        FleetClient(args.url, token_or_key=args.key, transport=args.transport) as fleet,
        aiohttp.ClientSession() as players,
    ):
        for party in range(args.parties):
            size = rng.randint(1, 4)
            try:
                grant = await seat_party(fleet, args.mode, size)
            except FleetClientError as exc:
                print(json.dumps({"party": party, "players": size, "error": exc.code}))
                continue
            joined = False
            if not args.no_join:
                sockets += await join(players, grant, size)
                joined = True
            line = {
                "party": party,
                "players": size,
                "room": grant.room.id,
                "endpoint": grant.room.endpoint_url,
                "created": grant.created,
                "joined": joined,
            }
            print(json.dumps(line), flush=True)
        if args.hold_s:
            await asyncio.sleep(args.hold_s)
        for socket in sockets:
            await socket.close()
    return 0


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m examples.matchmaker", description=__doc__)
    parser.add_argument("--url", action="append", required=True, help="a node (repeatable)")
    parser.add_argument("--key", required=True, help="admin key or API token")
    parser.add_argument("--transport", choices=("http", "grpc"), default="http")
    parser.add_argument("--parties", type=int, default=10)
    parser.add_argument("--mode", default="ranked")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--no-join", action="store_true", help="reserve seats only")
    parser.add_argument("--hold-s", type=float, default=0.0, help="keep players connected")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    return asyncio.run(run(parse(argv)))


if __name__ == "__main__":
    sys.exit(main())
