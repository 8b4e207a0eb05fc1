"""The example game server joins a real daemon; its players' connections reach the fleet."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp

from tests.support.clients import bearer
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


async def test_players_in_a_rest_created_room_show_up_as_connections() -> None:
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

            await wait_for(lambda: two_connections(http), 15, step=0.05)
            elapsed = asyncio.get_running_loop().time() - started
            assert elapsed < 10 * HEARTBEAT_MS / 1000  # within two heartbeats, generously
            await one.close()
            await two.close()
