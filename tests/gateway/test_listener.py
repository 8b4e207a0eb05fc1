"""The HTTP server's listening sockets (gateway/_listener.py): every waiting connection
is accepted at each loop turn, on uvloop as on asyncio's loop; binding as before."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import aiohttp
import pytest
import uvloop

from tests.support.orchestrators import running_orchestrator

WAITING = 100  # below the listen backlog (128): the kernel completes every connect at once
HOG_S = 0.05  # each loop iteration runs this long: a loop saturated by a rejoining fleet
REQUEST = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


def test_a_busy_uvloop_server_accepts_every_waiting_connection_at_each_turn() -> None:
    """uvloop accepts one connection per loop iteration: with 50 ms iterations, 100
    waiting connections took 5 s (a leader holding 9,000 agents accepted about 3 a
    second). The site accepts them all in the next iteration or two."""

    async def scenario() -> float:
        async with running_orchestrator() as orch:
            loop = asyncio.get_running_loop()
            busy = [True]

            def hog() -> None:
                until = time.perf_counter() + HOG_S
                while time.perf_counter() < until:
                    pass
                if busy[0]:
                    loop.call_soon(hog)

            clients: list[socket.socket] = []

            def connect() -> None:
                for _ in range(WAITING):
                    clients.append(socket.create_connection(("127.0.0.1", orch.port), 5))

            await asyncio.to_thread(connect)  # all of them in the backlog now
            server = orch._runner.server if orch._runner is not None else None
            assert server is not None
            loop.call_soon(hog)
            started = loop.time()
            try:
                while len(server.connections) < WAITING and loop.time() - started < 10:
                    await asyncio.sleep(0.01)
                return loop.time() - started
            finally:
                busy[0] = False
                for client in clients:
                    client.close()

    took = uvloop.run(scenario())
    assert took < 1.0, f"{WAITING} waiting connections accepted in {took:.2f} s"


async def test_it_serves_on_the_bound_port_and_stops_accepting_at_shutdown() -> None:
    async with running_orchestrator(api=True) as orch:
        port = orch.port
        assert port > 0
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{port}/healthz") as r,
        ):
            assert r.status == 200
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), 2).close()


def test_many_clients_at_once_are_all_served() -> None:
    """More connects than the backlog, from a thread, against an idle uvloop server:
    every one gets its answer."""

    async def scenario() -> list[int]:
        async with running_orchestrator(api=True) as orch:

            def fetch_all() -> list[int]:
                statuses: list[int] = []
                lock = threading.Lock()

                def fetch() -> None:
                    with socket.create_connection(("127.0.0.1", orch.port), 10) as sock:
                        sock.sendall(
                            b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                        )
                        head = sock.recv(64)
                    with lock:
                        statuses.append(int(head.split()[1]))

                threads = [threading.Thread(target=fetch) for _ in range(300)]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join()
                return statuses

            return await asyncio.to_thread(fetch_all)

    statuses = uvloop.run(scenario())
    assert statuses == [200] * 300
