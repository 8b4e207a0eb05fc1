"""A cluster for the chaos tests: daemons on one etcd (CONTRACT §10), a matchmaker that
finds the leader the way a REST client must, a create load that retries each id until
it is settled, and the audit that ends each run.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from tests.support.clients import Rest, cause
from tests.support.etcd import EtcdServer
from tests.support.ports import free_ports
from tests.support.waits import wait_for

from .support import (
    START_TIMEOUT_S,
    AgentProcess,
    Daemon,
    Rows,
    agents_rooms,
    copies,
    owners,
)

__all__ = [
    "Cluster",
    "CreateLoad",
    "Matchmaker",
    "Node",
    "all_agents_on",
    "audit",
    "running_cluster",
    "start_agents",
]

LEASE_MS = 2000
UNCERTAIN = frozenset({0, 502, 504})  # no answer, INSTANCE_DISCONNECTED, COMMAND_TIMEOUT
RETRIED = UNCERTAIN | {503}  # and NOT_LEADER / NOT_READY: refused before anything ran


class Node:
    """One daemon of the cluster, on a port of its own that it keeps across restarts."""

    def __init__(self, name: str, port: int, log_path: Path, args: tuple[str, ...]) -> None:
        self.name = name
        self.port = port
        self.log_path = log_path
        self._args = args
        self.daemon: Daemon | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def agent_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/"

    @property
    def alive(self) -> bool:
        return self.daemon is not None and self.daemon.alive

    async def start(self) -> None:
        advertise = ("--advertise-url", self.url)
        args = (*self._args, *advertise)
        self.daemon = await Daemon.start(self.port, self.log_path, *args, wait=False)
        await self.daemon.wait_listening()

    async def kill(self) -> None:
        """SIGKILL, and collect the process."""
        if self.daemon is not None:
            await self.daemon.close()

    def __repr__(self) -> str:
        return f"<Node {self.name} :{self.port}>"


class Cluster:
    """``size`` daemons (API on, gRPC off) on one etcd, cluster ``chaos``."""

    def __init__(
        self,
        etcd: EtcdServer,
        log_dir: Path,
        *,
        size: int = 3,
        heartbeat_ms: int,
        lease_ms: int = LEASE_MS,
        command_timeout_ms: int = 2000,
        settle_ms: int = 15_000,
    ) -> None:
        self.lease_ms = lease_ms
        args: tuple[str, ...] = ("--heartbeat", str(heartbeat_ms))
        args += ("--command-timeout", str(command_timeout_ms))
        args += ("--etcd", etcd.endpoint, "--cluster", "chaos", "--leader-lease", str(lease_ms))
        args += ("--settle", str(settle_ms))
        self.nodes = [
            Node(f"n{i}", port, log_dir / f"node{i}.log", args)
            for i, port in enumerate(free_ports(size))
        ]

    @property
    def agent_urls(self) -> list[str]:
        return [node.agent_url for node in self.nodes]

    def node_at(self, url: str | None) -> Node | None:
        """The node whose advertised URL is ``url``."""
        return next((node for node in self.nodes if node.url == url), None)

    async def start(self) -> None:
        await asyncio.gather(*(node.start() for node in self.nodes))

    async def close(self) -> None:
        await asyncio.gather(*(node.kill() for node in self.nodes))

    async def info(self, session: aiohttp.ClientSession, node: Node) -> dict[str, Any] | None:
        """``GET /v1/cluster`` of ``node``; None when it does not answer within 1 s."""
        if not node.alive:
            return None
        status, body = await Rest(session, node.port).call("GET", "/v1/cluster", timeout=1.0)
        return body["data"] if status == 200 else None

    async def infos(self, session: aiohttp.ClientSession) -> dict[Node, dict[str, Any] | None]:
        found = await asyncio.gather(*(self.info(session, node) for node in self.nodes))
        return dict(zip(self.nodes, found, strict=True))

    async def leader(self, session: aiohttp.ClientSession) -> Node | None:
        """The one node that says it leads, when exactly one does."""
        infos = await self.infos(session)
        leading = [node for node, info in infos.items() if info and info["role"] == "leader"]
        return leading[0] if len(leading) == 1 else None

    async def wait_leader(self, session: aiohttp.ClientSession, timeout: float) -> Node:
        node: Node | None = await wait_for(
            lambda: self.leader(session), timeout, step=0.02, message="no single leader"
        )
        assert node is not None
        return node

    async def wait_members(self, session: aiohttp.ClientSession, timeout: float = 15) -> None:
        """Until the leader lists every node as a member."""

        async def whole() -> bool:
            leader = await self.leader(session)
            info = await self.info(session, leader) if leader is not None else None
            return info is not None and len(info["members"]) == len(self.nodes)

        await wait_for(whole, timeout, step=0.05, message="not every node is a member")


@contextlib.asynccontextmanager
async def running_cluster(
    etcd: EtcdServer, log_dir: Path, **options: Any
) -> AsyncIterator[Cluster]:
    cluster = Cluster(etcd, log_dir, **options)
    try:
        await cluster.start()
        yield cluster
    finally:
        await cluster.close()


async def start_agents(
    cluster: Cluster,
    log_dir: Path,
    count: int,
    hosts: list[AgentProcess],
    *,
    per_host: int = 10,
    backoff_ms: tuple[float, float] = (250.0, 2000.0),
    watch_ms: float = 50,
    nice: int = 5,
) -> None:
    """``count`` agents, ``per_host`` to a process, each given every node's agent URL;
    each process joins ``hosts`` as soon as it runs (so that it is killed at the end
    whatever happens), and this returns once every agent has joined.

    The agent processes run at ``nice``: on one small machine the game servers would
    otherwise take the CPU the daemons and etcd need to keep their leases, which they
    do not share with them in production."""
    sizes = [per_host] * (count // per_host) + ([count % per_host] if count % per_host else [])
    started: list[AgentProcess] = []
    for i, size in enumerate(sizes):
        host = await AgentProcess.start(
            cluster.agent_urls,
            f"h{i}",
            log_dir,
            agents=size,
            backoff_ms=backoff_ms,
            watch_ms=watch_ms,
            nice=nice,
            wait=False,
        )
        hosts.append(host)
        started.append(host)
    # Many processes starting together on a small machine: allow for it.
    timeout = START_TIMEOUT_S + count / 5
    await asyncio.gather(
        *(host.wait_slots(n, timeout) for host, n in zip(started, sizes, strict=True))
    )


async def all_agents_on(matchmaker: Matchmaker, hosts: list[AgentProcess]) -> bool:
    """Whether the leader lists an instance of every agent of ``hosts``."""
    expected = {join.process_uid for host in hosts for join in host.joins}
    status, body = await matchmaker.call("GET", "/v1/instances")
    return status == 200 and {row["processUid"] for row in body["data"]} == expected


class Matchmaker:
    """A REST client of the whole cluster, as a matchmaker must be one: it sends to the
    node it takes for the leader, goes to the node a ``NOT_LEADER`` answer names
    (``leader``), and to the next node on a ``NOT_LEADER`` that names none or on no
    answer within ``timeout_s``."""

    def __init__(
        self, session: aiohttp.ClientSession, cluster: Cluster, timeout_s: float = 2.0
    ) -> None:
        self._cluster = cluster
        self._rests = {node: Rest(session, node.port) for node in cluster.nodes}
        self._timeout_s = timeout_s
        self.node = cluster.nodes[0]

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """One request to the node in use; moves on for the next one as the answer says."""
        node = self.node
        status, answer = await self._rests[node].call(method, path, body, self._timeout_s)
        if status == 503 and cause(answer) == "NOT_LEADER":
            hinted = self._cluster.node_at(answer.get("leader"))
            self.node = hinted if hinted is not None and hinted is not node else self._next(node)
        elif status == 0 and self.node is node:
            self.node = self._next(node)
        return status, answer

    def _next(self, node: Node) -> Node:
        nodes = self._cluster.nodes
        return nodes[(nodes.index(node) + 1) % len(nodes)]

    async def create(self, room_type: str, room_id: str) -> tuple[int, Any]:
        return await self.call("POST", "/v1/rooms", {"type": room_type, "roomId": room_id})

    async def rooms(self) -> Rows | None:
        """The leader's room list; None when this request found no leader."""
        status, body = await self.call("GET", "/v1/rooms")
        return body["data"] if status == 200 else None

    async def settle(self, room_id: str, pause_s: float = 0.05) -> tuple[int, bool, Any]:
        """Create ``room_id`` (type ``match``), retrying on 503, 502, 504 and no answer
        until 201 or 409: ``(final status, whether an attempt was uncertain, body)``."""
        uncertain = False
        while True:
            status, body = await self.create("match", room_id)
            if status not in RETRIED:
                return status, uncertain, body
            uncertain = uncertain or status in UNCERTAIN
            await asyncio.sleep(pause_s)


@dataclass
class CreateLoad:
    """Creates rooms with fresh explicit ids at about ``rate`` per second over
    ``workers`` workers, each retrying its id until 201 or 409 (:meth:`Matchmaker.settle`).
    Nothing is ever destroyed, so every room made stays on its agent to the end."""

    matchmaker: Matchmaker
    prefix: str
    rate: float = 100.0
    workers: int = 10
    acked: dict[str, tuple[float, str]] = field(default_factory=dict)  # id -> (at, instance)
    exists: set[str] = field(default_factory=set)  # 409 after an uncertain attempt
    uncertain: set[str] = field(default_factory=set)
    statuses: collections.Counter[str] = field(default_factory=collections.Counter)
    violations: list[str] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def start(self) -> None:
        self._tasks = [asyncio.ensure_future(self._work(n)) for n in range(self.workers)]

    async def stop(self, timeout: float = 30.0) -> None:
        """Stop starting ids; wait until each worker's id is settled."""
        self._stop.set()
        await asyncio.wait_for(asyncio.gather(*self._tasks), timeout)

    def acked_before(self, moment: float) -> set[str]:
        return {room_id for room_id, (at, _) in self.acked.items() if at <= moment}

    async def _work(self, n: int) -> None:
        interval = self.workers / self.rate
        due = time.monotonic()
        counter = 0
        while not self._stop.is_set():
            room_id = f"{self.prefix}{n}-{counter}"
            counter += 1
            status, uncertain, body = await self.matchmaker.settle(room_id)
            self.statuses[f"{status} {cause(body) or ''}".strip()] += 1
            if uncertain:
                self.uncertain.add(room_id)
            if status == 201:
                self.acked[room_id] = (time.monotonic(), body["data"]["instanceId"])
            elif status == 409 and uncertain:
                self.exists.add(room_id)  # an earlier attempt may have made it
            else:
                self.violations.append(f"{room_id}: {status} {body}")
            due = max(due + interval, time.monotonic() - 1.0)
            await asyncio.sleep(max(0.0, due - time.monotonic()))


async def audit(
    matchmaker: Matchmaker, hosts: list[AgentProcess], load: CreateLoad, agents: int
) -> dict[str, Any]:
    """With every agent back: the leader's read model equals the agents' own room lists
    (same ids on the same process_uid), no id is on two agents or namespaced, and every
    room acked with 201 is listed on the process it was acked on. Returns figures."""
    expected = {uid for host in hosts for uid in (j.process_uid for j in host.joins)}
    assert len(expected) == agents

    async def agreed() -> tuple[dict[str, list[str]], Rows] | None:
        status, body = await matchmaker.call("GET", "/v1/instances")
        if status != 200 or {row["processUid"] for row in body["data"]} != expected:
            return None
        rows = await matchmaker.rooms()
        rooms = await agents_rooms(hosts)
        who = owners(hosts)
        if rows is None or not {row["instanceId"] for row in rows} <= who.keys():
            return None
        listed = {(row["id"], who[row["instanceId"]]) for row in rows}
        held = {(room_id, uid) for uid, ids in rooms.items() for room_id in ids}
        return (rooms, rows) if listed == held else None

    found = await wait_for(agreed, 15, step=0.2, message="read model != the agents' rooms")
    rooms, rows = found
    assert not copies(rooms), copies(rooms)
    ids = [row["id"] for row in rows]
    assert len(ids) == len(set(ids)), "an id listed twice"
    assert not [room_id for room_id in ids if "~" in room_id]
    who = owners(hosts)
    where = {row["id"]: who.get(row["instanceId"]) for row in rows}
    lost = [room_id for room_id in load.acked if room_id not in where]
    assert not lost, lost[:20]
    moved = [
        room_id for room_id, (_, instance) in load.acked.items() if where[room_id] != who[instance]
    ]
    assert not moved, moved[:20]
    assert not load.violations, load.violations[:20]
    unlisted_409 = sum(1 for room_id in load.exists if room_id not in where)
    return {
        "acked": len(load.acked),
        "uncertain_then_201": len(load.uncertain & set(load.acked)),
        "uncertain_then_409": len(load.exists),
        "of_which_unlisted": unlisted_409,
        "rooms": len(rows),
    }
