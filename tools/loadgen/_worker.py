"""A load-generator worker process: one slice of the simulated agents on one event loop.

The master talks to it over a :mod:`multiprocessing` pipe with small dict messages
(``status``, ``report``, ``set``, ``stop``), each answered with one dict.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import resource
from collections.abc import Mapping
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, Final
from urllib.parse import urlsplit

from ._agent import AgentStats, Behaviour, ReplyPolicy, RoomFields, SimAgent

__all__ = ["WorkerConfig", "worker_main"]

_TICK_S: Final = 0.1
_HANDSHAKE_S: Final = 10.0  # a dial holds its connect slot until the Hello, at most this


@dataclass(frozen=True)
class WorkerConfig:
    worker: int
    first: int  # global index of this worker's first agent
    behaviours: tuple[Behaviour, ...]  # one per agent of this worker
    rooms: int
    room_types: tuple[str, ...]
    regions: tuple[str, ...]
    max_rooms: int | None
    urls: tuple[str, ...]  # the orchestrators, in dial order (a cluster's nodes)
    key: str
    connect_concurrency: int
    room_max_connections: int | None = None
    room_metadata: Mapping[str, Any] | None = None
    room_metadata_unique: bool = True
    deltas: bool = True


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def worker_main(conn: Connection, config: WorkerConfig) -> None:
    """Process entry point."""
    raise_fd_limit()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_Worker(conn, config).run())


class _Worker:
    def __init__(self, conn: Connection, config: WorkerConfig) -> None:
        self._conn = conn
        self._config = config
        self._targets: dict[str, tuple[str, int, str, str]] = {}
        self.stats = AgentStats()
        fields = (
            RoomFields(
                config.room_max_connections, config.room_metadata, config.room_metadata_unique
            )
            if config.room_max_connections is not None or config.room_metadata is not None
            else None
        )
        self.agents = [
            SimAgent(
                worker=config.worker,
                index=config.first + i,
                behaviour=behaviour,
                rooms=config.rooms,
                room_types=config.room_types,
                labels={"region": config.regions[(config.first + i) % len(config.regions)]},
                max_rooms=config.max_rooms,
                stats=self.stats,
                urls=config.urls,
                dial=self._dial,
                fields=fields,
                deltas=config.deltas,
            )
            for i, behaviour in enumerate(config.behaviours)
        ]
        self._churn_per_s = 0.0
        self._replace_per_s = 0.0
        self._churn_acc = 0.0
        self._replace_acc = 0.0
        self._stopping = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._started = os.times()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._gate = asyncio.Semaphore(self._config.connect_concurrency)
        loop.add_reader(self._conn.fileno(), self._on_command)
        for agent in self.agents:
            agent.start_pass()
        ticker = asyncio.create_task(self._churn_loop())
        await self._stop.wait()
        ticker.cancel()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(ticker, *self._tasks, return_exceptions=True)
        loop.remove_reader(self._conn.fileno())

    # --- connections --------------------------------------------------------------

    def _dial(self, agent: SimAgent, url: str) -> None:
        if self._stopping:
            return
        task = asyncio.create_task(self._open(agent, url))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _target(self, url: str) -> tuple[str, int, str, str]:
        """``(host, port, Host header, path)`` of an agent URL, parsed once."""
        target = self._targets.get(url)
        if target is None:
            parts = urlsplit(url)
            target = self._targets[url] = (
                parts.hostname or "127.0.0.1",
                parts.port or 80,
                parts.netloc,
                parts.path or "/",
            )
        return target

    async def _open(self, agent: SimAgent, url: str) -> None:
        loop = asyncio.get_running_loop()
        host, port, host_header, path = self._target(url)
        async with self._gate:  # bounded handshakes in flight: no SYN-backlog overflow
            if self._stopping:
                return
            handshake = agent.handshake = loop.create_future()
            try:
                await loop.create_connection(
                    lambda: agent.new_client(host_header, path, self._config.key), host, port
                )
            except OSError as exc:
                agent.handshake = None
                agent.connect_failed(exc)
                return
            # Hold the slot until the Hello or the end of the connection, 10 s at most.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(handshake, _HANDSHAKE_S)
            if agent.handshake is handshake:
                agent.handshake = None

    # --- churn --------------------------------------------------------------------

    async def _churn_loop(self) -> None:
        agents = self.agents
        while True:
            await asyncio.sleep(_TICK_S)
            self._churn_acc += self._churn_per_s * _TICK_S
            count = int(self._churn_acc)
            self._churn_acc -= count
            for _ in range(count):
                agent = random.choice(agents)
                if agent.joined:
                    agent.bump_connections()
            self._replace_acc += self._replace_per_s * _TICK_S
            count = int(self._replace_acc)
            self._replace_acc -= count
            for _ in range(count):
                agent = random.choice(agents)
                if agent.joined:
                    agent.pending_replace += 1

    # --- commands -----------------------------------------------------------------

    def _on_command(self) -> None:
        try:
            message: dict[str, Any] = self._conn.recv()
        except (EOFError, OSError):
            self._shutdown()
            return
        op = message.get("op")
        if op == "status":
            self._conn.send({"joined": sum(a.joined for a in self.agents)})
        elif op == "report":
            self._conn.send(self._report())
            if message.get("reset"):
                self.stats.reset()
                self._started = os.times()
        elif op == "set":
            self._apply(message)
            self._conn.send({})
        elif op == "stop":
            self._shutdown()
            self._conn.send(self._report())
        else:
            self._conn.send({"error": f"unknown op {op!r}"})

    def _apply(self, message: dict[str, Any]) -> None:
        if message.get("churn_per_s") is not None:
            self._churn_per_s = float(message["churn_per_s"])
        if message.get("replace_per_s") is not None:
            self._replace_per_s = float(message["replace_per_s"])
        fraction = message.get("change_fraction")
        if fraction is not None:
            changing = round(float(fraction) * len(self.agents))
            for i, agent in enumerate(self.agents):
                agent.change_every_poll = i < changing and agent.behaviour == "ok"
        policy: ReplyPolicy | None = message.get("policy")
        if policy is not None:
            for agent in self.agents:
                agent.policy = policy
        add = message.get("add_rooms")
        if add:
            for agent in self.agents:
                agent.add_rooms(int(add))

    def _shutdown(self) -> None:
        self._stopping = True
        for agent in self.agents:
            agent.stopping = True
            if agent.client is not None:
                agent.client.abort()
        self._stop.set()

    def _report(self) -> dict[str, Any]:
        stats = self.stats
        now = os.times()
        return {
            "agents": len(self.agents),
            "joined": sum(a.joined for a in self.agents),
            # not joined: a dial queued or in its handshake, or a socket open without a
            # Hello (the rest wait out a backoff)
            "dialling": len(self._tasks),
            "open_unjoined": sum(
                1
                for a in self.agents
                if not a.joined and a.client is not None and not a.client.finished
            ),
            "rooms": sum(len(a.rooms) for a in self.agents),
            "hellos": stats.hellos,
            "polls": stats.polls,
            "replies_hash": stats.replies_hash,
            "replies_full": stats.replies_full,
            "replies_delta": stats.replies_delta,
            "bytes_full": stats.bytes_full,
            "commands": stats.commands,
            "acks": stats.acks,
            "conn_changes": stats.conn_changes,
            "rooms_created": stats.rooms_created,
            "rooms_destroyed": stats.rooms_destroyed,
            "closes": dict(stats.closes),
            "errors": dict(stats.errors),
            "dial_failures": dict(stats.dial_failures),
            "lateness": stats.lateness.to_state(),
            "cpu_s": (now.user - self._started.user) + (now.system - self._started.system),
        }
