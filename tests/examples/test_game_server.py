"""The example game server joins a real daemon; its players' connections reach the fleet."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[2]
AGENT = "agent-key-0123456789abcdef"
ADMIN = "admin-key-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {ADMIN}"}
HEARTBEAT_MS = 200


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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


async def _until(check: object, session: aiohttp.ClientSession, timeout: float = 15) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        if await check(session):  # type: ignore[operator]
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met before the deadline")
        await asyncio.sleep(0.05)


async def test_players_in_a_rest_created_room_show_up_as_connections() -> None:
    port = _free_port()
    env = {
        "FLEET_AGENT_KEY": AGENT,
        "FLEET_ADMIN_KEY": ADMIN,
        "FLEET_HOST": "127.0.0.1",
        "FLEET_PORT": str(port),
        "FLEET_GRPC_PORT": "off",
        "FLEET_HEARTBEAT_MS": str(HEARTBEAT_MS),
    }
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
            f"ws://127.0.0.1:{port}",
            env=env,
        ) as game,
        aiohttp.ClientSession(headers=AUTH) as http,
    ):
        assert game.stdout is not None
        ready = (await asyncio.wait_for(game.stdout.readline(), 30)).decode()
        assert "ready" in ready, ready

        async def one_instance(session: aiohttp.ClientSession) -> bool:
            async with session.get(f"{base}/v1/instances") as resp:
                return resp.status == 200 and len((await resp.json())["data"]) == 1

        await _until(one_instance, http)
        async with http.post(
            f"{base}/v1/rooms",
            json={"type": "match", "roomId": "arena-1", "placement": {"labels": {"region": "eu"}}},
        ) as resp:
            assert resp.status == 201
            room = (await resp.json())["data"]
        endpoint = room["endpointUrl"]
        async with aiohttp.ClientSession() as players:
            one = await players.ws_connect(f"{endpoint}/rooms/arena-1")
            two = await players.ws_connect(f"{endpoint}/rooms/arena-1")
            await one.send_str("hello")
            got = await two.receive(timeout=5)
            assert got.data == "hello"
            started = asyncio.get_running_loop().time()

            async def two_connections(session: aiohttp.ClientSession) -> bool:
                async with session.get(f"{base}/v1/rooms/arena-1") as resp:
                    return bool((await resp.json())["data"]["connections"] == 2)

            await _until(two_connections, http)
            elapsed = asyncio.get_running_loop().time() - started
            assert elapsed < 10 * HEARTBEAT_MS / 1000  # within two heartbeats, generously
            await one.close()
            await two.close()
