"""The example game server joins a real daemon; its players' connections reach the fleet."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from examples.game_server import ChatRoom, Refused, build_rooms
from fleet_agent._tickets import TicketClaims, mint_ticket, ticket_key
from tests.support.clients import bearer
from tests.support.keys import KEY
from tests.support.orchestrators import agent_url, daemon_env
from tests.support.ports import free_port
from tests.support.waits import wait_for

ROOT = Path(__file__).resolve().parents[2]
HEARTBEAT_MS = 200


@asynccontextmanager
async def process(*args: str, env: dict[str, str]) -> AsyncIterator[asyncio.subprocess.Process]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *args,
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 15)
            except TimeoutError:
                proc.kill()
                await proc.wait()


@asynccontextmanager
async def fleet(*game_args: str) -> AsyncIterator[tuple[str, aiohttp.ClientSession]]:
    """A daemon and the example game server (``eu1``, region ``eu``) joined to it; yields
    the daemon's base URL and an admin session."""
    port = free_port()
    env = daemon_env(port, HEARTBEAT_MS)
    base = f"http://127.0.0.1:{port}"
    async with (
        process("-m", "fleet_server", env=env),
        process(
            "-m",
            "examples.game_server",
            "--name",
            "eu1",
            "--port",
            "0",
            "--label",
            "region=eu",
            "--orchestrator",
            agent_url(port),
            *game_args,
            env=env,
        ) as game,
        aiohttp.ClientSession(headers=bearer()) as http,
    ):
        assert game.stdout is not None
        ready = (await asyncio.wait_for(game.stdout.readline(), 30)).decode()
        assert "ready" in ready, ready

        async def one_instance(session: aiohttp.ClientSession) -> bool:
            async with session.get(f"{base}/v1/instances") as resp:
                return resp.status == 200 and len((await resp.json())["data"]) == 1

        await wait_for(lambda: one_instance(http), 15, step=0.05)
        yield base, http


async def create_room(http: aiohttp.ClientSession, base: str, room_id: str) -> dict[str, Any]:
    async with http.post(
        f"{base}/v1/rooms",
        json={"type": "match", "roomId": room_id, "placement": {"labels": {"region": "eu"}}},
    ) as resp:
        assert resp.status == 201
        room: dict[str, Any] = (await resp.json())["data"]
        return room


async def connections_become(
    http: aiohttp.ClientSession, base: str, room_id: str, count: int
) -> None:
    async def reached() -> bool:
        async with http.get(f"{base}/v1/rooms/{room_id}") as resp:
            return bool((await resp.json())["data"]["connections"] == count)

    await wait_for(reached, 15, step=0.05, message=f"{room_id} never had {count} connections")


async def test_players_in_a_rest_created_room_show_up_as_connections() -> None:
    async with fleet() as (base, http):
        room = await create_room(http, base, "arena-1")
        endpoint = room["endpointUrl"]
        async with aiohttp.ClientSession() as players:
            one = await players.ws_connect(f"{endpoint}/rooms/arena-1")
            two = await players.ws_connect(f"{endpoint}/rooms/arena-1")
            await one.send_str("hello")
            got = await two.receive(timeout=5)
            assert got.data == "hello"
            started = asyncio.get_running_loop().time()
            await connections_become(http, base, "arena-1", 2)
            elapsed = asyncio.get_running_loop().time() - started
            assert elapsed < 10 * HEARTBEAT_MS / 1000  # within two heartbeats, generously
            await one.close()
            await two.close()


async def refusal(players: aiohttp.ClientSession, url: str) -> str:
    """The reason the game server gives for refusing the join at ``url``."""
    async with players.get(url, headers={"Upgrade": "websocket"}) as resp:
        assert resp.status == 403, resp.status
        reason: str = (await resp.json())["error"]
        return reason


async def test_seat_tickets_admit_their_party_once_and_bad_ones_are_refused() -> None:
    async with fleet("--seats", "3") as (base, http):
        room = await create_room(http, base, "arena-1")
        join = f"{room['endpointUrl']}/rooms/arena-1"
        exp = int(time.time() * 1000) + 60_000
        party = mint_ticket(ticket_key(KEY), TicketClaims("s_party", "arena-1", 2, exp))
        forged = mint_ticket(
            ticket_key("not-the-agent-key"), TicketClaims("s_x", "arena-1", 1, exp)
        )
        elsewhere = mint_ticket(ticket_key(KEY), TicketClaims("s_y", "arena-2", 1, exp))
        async with aiohttp.ClientSession() as players:
            assert await refusal(players, f"{join}?ticket={forged}") == "bad signature"
            assert await refusal(players, f"{join}?ticket={elsewhere}") == "ticket for another room"
            assert await refusal(players, f"{join}?ticket=v1.x") == "malformed ticket"
            first = await players.ws_connect(f"{join}?ticket={party}")
            await connections_become(http, base, "arena-1", 2)  # the party's second seat held
            second = await players.ws_connect(f"{join}?ticket={party}")
            assert await refusal(players, f"{join}?ticket={party}") == "ticket already used"
            walk_in = await players.ws_connect(join)
            await connections_become(http, base, "arena-1", 3)
            assert await refusal(players, join) == "room is full"
            await first.close()
            await connections_become(http, base, "arena-1", 2)
            await second.close()
            await walk_in.close()
            await connections_become(http, base, "arena-1", 0)


async def test_create_options_become_metadata_and_a_private_room_is_locked() -> None:
    rooms = build_rooms(["match"], seats=4)
    ranked = await rooms.create("match", "r1", {"map": "dust", "mode": "ranked"})
    assert ranked.metadata == {"map": "dust", "mode": "ranked"}
    assert (ranked.max_connections, ranked.locked) == (4, False)
    private = await rooms.create("match", "r2", {"private": True})
    assert private.metadata == {"map": "default", "mode": "casual"} and private.locked
    assert isinstance(private, ChatRoom)
    with pytest.raises(Refused, match="room is locked"):
        private.admit(None)
    with pytest.raises(Refused, match="no agent key"):
        private.admit("v1.a.b")
    assert private.connections == 0
