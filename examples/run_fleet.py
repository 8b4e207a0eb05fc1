"""``make run``: the daemon with dev keys and two example game servers, ready to poke.

Starts ``rivalis-fleet`` and two ``examples.game_server`` processes (labels
``region=eu`` and ``region=us``), waits until both appear in ``GET /v1/instances``,
prints the dashboard URL and the admin key with ready-to-paste commands, and stops all
three on Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import signal
import sys
from collections.abc import Sequence

import aiohttp

GAME_SERVERS = (("eu1", "region=eu"), ("us1", "region=us"))


async def _wait_ready(base: str, timeout: float) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    async with aiohttp.ClientSession() as session:
        while True:
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with session.get(f"{base}/readyz") as resp:
                    if resp.status == 200:
                        return
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"the orchestrator was not ready in {timeout} s")
            await asyncio.sleep(0.1)


async def _wait_for_instances(base: str, admin_key: str, count: int, timeout: float) -> int:
    headers = {"Authorization": f"Bearer {admin_key}"}
    deadline = asyncio.get_running_loop().time() + timeout
    async with aiohttp.ClientSession() as session:
        while True:
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with session.get(f"{base}/v1/instances", headers=headers) as resp:
                    if resp.status == 200:
                        body = await resp.json()
                        if len(body["data"]) >= count:
                            return len(body["data"])
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"the fleet did not reach {count} instances in {timeout} s")
            await asyncio.sleep(0.2)


def _banner(base: str, grpc_port: int, admin_key: str) -> str:
    auth = f'-H "Authorization: Bearer {admin_key}"'
    return "\n".join(
        [
            "",
            "rivalis-fleet is running with two game servers (eu1: region=eu, us1: region=us).",
            f"dashboard: {base}/  (open it in a browser, sign in with the admin key)",
            f"admin key: {admin_key}",
            "",
            "list instances:",
            f"  curl -s {auth} {base}/v1/instances",
            "create a room in the eu region:",
            f"  curl -s {auth} -H 'Content-Type: application/json' \\",
            '       -d \'{"type":"match","placement":{"labels":{"region":"eu"}}}\' '
            f"{base}/v1/rooms",
            "watch events live:",
            f"  curl -sN {auth} {base}/v1/events",
            "Prometheus metrics:",
            f"  curl -s {base}/metrics",
            "gRPC (grpcurl, reflection is on):",
            f'  grpcurl -plaintext -H "authorization: Bearer {admin_key}" '
            f"127.0.0.1:{grpc_port} rivalis.fleet.v1.FleetControl/GetStats",
            "",
            "Ctrl-C stops everything.",
            "",
        ]
    )


async def run(port: int, grpc_port: int, game_port: int) -> int:
    agent_key = secrets.token_urlsafe(32)
    admin_key = secrets.token_urlsafe(32)
    env = {
        **os.environ,
        "FLEET_AGENT_KEY": agent_key,
        "FLEET_ADMIN_KEY": admin_key,
        "FLEET_HOST": "127.0.0.1",
        "FLEET_PORT": str(port),
        "FLEET_GRPC_PORT": str(grpc_port),
    }
    base = f"http://127.0.0.1:{port}"
    procs: list[asyncio.subprocess.Process] = []
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        procs.append(
            await asyncio.create_subprocess_exec(
                sys.executable, "-m", "fleet_server", env=env, start_new_session=True
            )
        )
        await _wait_ready(base, 30)
        for offset, (name, label) in enumerate(GAME_SERVERS):
            procs.append(
                await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "examples.game_server",
                    "--name",
                    name,
                    "--port",
                    str(game_port + offset),
                    "--label",
                    label,
                    "--orchestrator",
                    f"ws://127.0.0.1:{port}",
                    env=env,
                    start_new_session=True,
                )
            )
        waiter = asyncio.ensure_future(_wait_for_instances(base, admin_key, 2, 30))
        stopper = asyncio.ensure_future(stop.wait())
        done, _ = await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if waiter in done:
            waiter.result()
            print(_banner(base, grpc_port, admin_key), flush=True)
            await stopper
        else:
            waiter.cancel()
            stopper.cancel()
        return 0
    finally:
        # Game servers first (they leave the fleet cleanly), then the daemon.
        for proc in reversed(procs):
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 15)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        print("stopped", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.run_fleet")
    parser.add_argument("--port", type=int, default=7350)
    parser.add_argument("--grpc-port", type=int, default=7351)
    parser.add_argument("--game-port", type=int, default=9001, help="eu1's port; us1 gets +1")
    args = parser.parse_args(argv)
    try:
        return asyncio.run(run(args.port, args.grpc_port, args.game_port))
    except TimeoutError as exc:
        print(f"run_fleet: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
