"""``make run-ha``: etcd, two orchestrators and the two example game servers.

Starts a private etcd (its own data dir, free ports), two ``rivalis-fleet`` nodes with
``examples/ha.yaml`` (ports 7350/7351 and 7360/7361), and the two example game servers,
whose agents know both nodes. It prints which node leads, and a line each time the lead
moves: stop the leader (``kill <pid>``, printed) and watch the other take over and the
game servers follow. Ctrl-C stops everything.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import aiohttp

from examples.run_fleet import GAME_SERVERS

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "examples" / "ha.yaml"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def _start_etcd(data_dir: str) -> tuple[asyncio.subprocess.Process, str]:
    binary = shutil.which("etcd")
    if binary is None:
        raise SystemExit("run-ha needs etcd: apt-get install etcd-server (make test installs it)")
    client, peer = _free_port(), _free_port()
    endpoint = f"http://127.0.0.1:{client}"
    proc = await asyncio.create_subprocess_exec(
        binary,
        "--name=run-ha",
        f"--data-dir={data_dir}",
        f"--listen-client-urls={endpoint}",
        f"--advertise-client-urls={endpoint}",
        f"--listen-peer-urls=http://127.0.0.1:{peer}",
        f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
        f"--initial-cluster=run-ha=http://127.0.0.1:{peer}",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        start_new_session=True,
    )
    async with aiohttp.ClientSession() as session:
        for _ in range(150):
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with session.get(f"{endpoint}/health") as resp:
                    if resp.status == 200:
                        return proc, endpoint
            await asyncio.sleep(0.1)
    raise SystemExit(f"etcd did not start at {endpoint}")


async def _cluster(session: aiohttp.ClientSession, base: str, key: str) -> dict[str, object]:
    headers = {"Authorization": f"Bearer {key}"}
    async with session.get(f"{base}/v1/cluster", headers=headers) as resp:
        body = await resp.json()
        data: dict[str, object] = body["data"]
        return data


async def _leader(session: aiohttp.ClientSession, bases: list[str], key: str) -> str | None:
    """The URL of the node that leads, as the nodes themselves say."""
    for base in bases:
        with contextlib.suppress(aiohttp.ClientError, OSError, KeyError, ValueError):
            if (await _cluster(session, base, key))["role"] == "leader":
                return base
    return None


async def _instances(session: aiohttp.ClientSession, base: str, key: str) -> int:
    headers = {"Authorization": f"Bearer {key}"}
    with contextlib.suppress(aiohttp.ClientError, OSError, KeyError, ValueError):
        async with session.get(f"{base}/v1/stats", headers=headers) as resp:
            if resp.status == 200:
                count: int = (await resp.json())["data"]["instances"]
                return count
    return 0


def _banner(leader: str, nodes: dict[str, int], admin_key: str) -> str:
    auth = f'-H "Authorization: Bearer {admin_key}"'
    pids = ", ".join(f"{base} pid {pid}" for base, pid in nodes.items())
    return "\n".join(
        [
            "",
            f"rivalis-fleet HA is running: {pids}.",
            f"leader: {leader}",
            f"admin key: {admin_key}",
            "",
            "who leads (any node answers):",
            f"  curl -s {auth} {leader}/v1/cluster",
            "create a room on the leader:",
            f"  curl -s {auth} -H 'Content-Type: application/json' -d '{{\"type\":\"match\"}}' "
            f"{leader}/v1/rooms",
            f"stop the leader and watch the other node take over: kill {nodes[leader]}",
            "",
            "Ctrl-C stops everything.",
            "",
        ]
    )


async def _watch(bases: list[str], admin_key: str, stop: asyncio.Event) -> None:
    """Print a line each time the lead moves or the leader's game servers change."""
    current: tuple[str | None, int] = (bases[0], -1)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        while not stop.is_set():
            leader = await _leader(session, bases, admin_key)
            count = await _instances(session, leader, admin_key) if leader else 0
            if (leader, count) != current:
                current = (leader, count)
                if leader is None:
                    print("no node leads right now", flush=True)
                else:
                    print(f"leader: {leader} ({count} game servers)", flush=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)


async def _wait_listening(bases: list[str]) -> None:
    """Until every node answers ``/healthz`` (leader or standby)."""
    async with aiohttp.ClientSession() as session:
        for base in bases:
            for _ in range(300):
                with contextlib.suppress(aiohttp.ClientError, OSError):
                    async with session.get(f"{base}/healthz") as resp:
                        if resp.status == 200:
                            break
                await asyncio.sleep(0.1)
            else:
                raise SystemExit(f"{base} did not start within 30 s")


async def _spawn(*args: str, env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, *args, env=env, cwd=ROOT, start_new_session=True
    )


async def run(ports: Sequence[tuple[int, int]], game_port: int) -> int:
    agent_key = secrets.token_urlsafe(32)
    admin_key = secrets.token_urlsafe(32)
    env = {**os.environ, "FLEET_AGENT_KEY": agent_key, "FLEET_ADMIN_KEY": admin_key}
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    data_dir = tempfile.mkdtemp(prefix="rivalis-fleet-ha-etcd-")
    etcd, endpoint = await _start_etcd(data_dir)
    procs: list[asyncio.subprocess.Process] = []
    nodes: dict[str, int] = {}
    try:
        for port, grpc_port in ports:
            args: tuple[str, ...] = ("-m", "fleet_server", "--config", str(CONFIG))
            args += ("--etcd", endpoint, "-p", str(port), "--grpc-port", str(grpc_port))
            proc = await _spawn(*args, "--leader-lease", "3000", env=env)
            procs.append(proc)
            nodes[f"http://127.0.0.1:{port}"] = proc.pid
        bases = list(nodes)
        await _wait_listening(bases)
        urls = ",".join(f"ws://127.0.0.1:{port}" for port, _ in ports)
        for offset, (name, label) in enumerate(GAME_SERVERS):
            args = ("-m", "examples.game_server", "--name", name, "--label", label)
            args += ("--port", str(game_port + offset), "--orchestrator", urls)
            procs.append(await _spawn(*args, env=env))
        async with aiohttp.ClientSession() as session:
            for _ in range(300):
                leader = await _leader(session, bases, admin_key)
                if leader is not None and await _instances(session, leader, admin_key) >= 2:
                    print(_banner(leader, nodes, admin_key), flush=True)
                    break
                if stop.is_set():
                    return 0
                await asyncio.sleep(0.1)
            else:
                raise SystemExit("the HA fleet did not come up within 30 s")
        await _watch(bases, admin_key, stop)
        return 0
    finally:
        for proc in reversed(procs):  # game servers first, then the nodes
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 15)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        etcd.terminate()
        await etcd.wait()
        shutil.rmtree(data_dir, ignore_errors=True)
        print("stopped", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.run_ha")
    parser.add_argument("--port", type=int, default=7350, help="the first node; the second +10")
    parser.add_argument("--game-port", type=int, default=9001, help="eu1's port; us1 gets +1")
    args = parser.parse_args(argv)
    ports = [(args.port, args.port + 1), (args.port + 10, args.port + 11)]
    return asyncio.run(run(ports, args.game_port))


if __name__ == "__main__":
    sys.exit(main())
