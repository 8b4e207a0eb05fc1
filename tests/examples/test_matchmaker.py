"""The example matchmaker seats parties through ``fleet_client`` on a real daemon and the
example game server; every party joins with its ticket and no room is over-full."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json

from examples.matchmaker import main as matchmaker_main
from tests.support.keys import ADMIN

from .test_game_server import fleet


async def test_parties_get_seats_join_with_their_tickets_and_fill_rooms_in_turn() -> None:
    async with fleet("--seats", "6") as (base, http):
        out = io.StringIO()
        args = ["--url", base, "--key", ADMIN, "--parties", "8", "--seed", "7", "--hold-s", "1"]
        with contextlib.redirect_stdout(out):
            # in a thread of its own: main() runs its own event loop
            code = await asyncio.to_thread(matchmaker_main, args)
        assert code == 0
        lines = [json.loads(line) for line in out.getvalue().splitlines()]
        assert len(lines) == 8 and all(line["joined"] for line in lines), lines
        seated: dict[str, int] = {}
        for line in lines:
            seated[line["room"]] = seated.get(line["room"], 0) + line["players"]
        assert all(count <= 6 for count in seated.values()), seated
        assert sum(seated.values()) == sum(line["players"] for line in lines)
        assert sum(line["created"] for line in lines) == len(seated)  # a new room when full
        async with http.get(f"{base}/v1/rooms") as reply:
            rooms = {room["id"]: room for room in (await reply.json())["data"]}
        for room_id in seated:
            assert rooms[room_id]["metadata"]["mode"] == "ranked"
