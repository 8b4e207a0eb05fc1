"""Processes for the chaos tests: agent hosts (``tests.chaos.agent_host``), the daemon, a
TCP proxy that can cut connections, and a watch over the room list."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Self

from tests.support.keys import ADMIN, KEY
from tests.support.orchestrators import env_without_fleet
from tests.support.waits import wait_for

__all__ = [
    "ROOT",
    "START_TIMEOUT_S",
    "AgentProcess",
    "Daemon",
    "Joined",
    "RoomWatch",
    "TcpProxy",
    "agent_processes",
    "agents_rooms",
    "copies",
    "owners",
    "wait_listed",
]

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Joined:
    slot: int
    instance_id: str
    process_uid: str
    at: float  # time.monotonic() in the agent process (one clock for every process)
    url: str  # the orchestrator URL it joined through


class AgentProcess:
    """One ``tests.chaos.agent_host`` subprocess and what it has said so far."""

    def __init__(
        self, proc: asyncio.subprocess.Process, name: str, log: IO[bytes], log_path: Path
    ) -> None:
        self.proc = proc
        self.name = name
        self.log_path = log_path  # its stderr: the agents' warnings
        self._log = log
        self.joins: list[Joined] = []
        self.left: set[int] = set()
        self.creating: set[str] = set()  # lag rooms whose creation began
        self._dumps: asyncio.Queue[dict[str, list[str]]] = asyncio.Queue()
        self._reader = asyncio.create_task(self._read(), name=f"agent-host-{name}")

    @classmethod
    async def start(
        cls,
        url: str | Sequence[str],
        name: str,
        log_dir: Path,
        *,
        agents: int = 1,
        lag_ms: float = 500.0,
        backoff_ms: tuple[float, float] | None = None,
        watch_ms: float | None = None,
        nice: int = 0,
        wait: bool = True,
    ) -> AgentProcess:
        """Start a host of ``agents`` agents dialling ``url`` (one, or a cluster's list),
        at ``nice`` (game servers do not share the orchestrators' CPU in production);
        with ``wait``, return once every one has joined."""
        urls = ",".join([url] if isinstance(url, str) else url)
        extra = ["--backoff-ms", f"{backoff_ms[0]:g},{backoff_ms[1]:g}"] if backoff_ms else []
        extra += ["--watch-ms", f"{watch_ms:g}"] if watch_ms is not None else []
        log_path = log_dir / f"{name}.log"
        log = log_path.open("ab")
        niced = ["nice", "-n", str(nice)] if nice else []
        proc = await asyncio.create_subprocess_exec(
            *niced,
            sys.executable,
            "-m",
            "tests.chaos.agent_host",
            urls,
            KEY,
            name,
            "--agents",
            str(agents),
            "--lag-ms",
            str(lag_ms),
            *extra,
            cwd=ROOT,
            env=env_without_fleet(PYTHONPATH=str(ROOT)),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=log,
        )
        host = cls(proc, name, log, log_path)
        if wait:
            await host.wait_slots(agents)
        return host

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            words = line.decode().split(maxsplit=1)
            if not words:
                continue
            kind, rest = words[0], (words[1] if len(words) > 1 else "")
            if kind == "joined":
                slot, iid, puid, at, url = rest.split()
                self.joins.append(Joined(int(slot), iid, puid, float(at), url))
            elif kind == "creating":
                self.creating.add(rest.strip())
            elif kind == "left":
                self.left.add(int(rest))
            elif kind == "rooms":
                self._dumps.put_nowait(json.loads(rest))

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc.returncode is None

    def latest(self, slot: int = 0) -> Joined:
        """The newest join of ``slot``."""
        return [j for j in self.joins if j.slot == slot][-1]

    def slots(self) -> set[int]:
        return {j.slot for j in self.joins} - self.left

    async def wait_slots(self, count: int, timeout: float = START_TIMEOUT_S) -> None:
        await wait_for(lambda: len({j.slot for j in self.joins}) >= count, timeout)

    async def wait_rejoin(self, slot: int, after: str, timeout: float = 10.0) -> Joined:
        """The first join of ``slot`` with an instance id other than ``after``."""
        await wait_for(lambda: self.latest(slot).instance_id != after, timeout, step=0.005)
        return self.latest(slot)

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        if self.alive:
            self.proc.stdin.write(line.encode() + b"\n")

    async def dump(self, timeout: float = 10.0) -> dict[str, list[str]]:
        while not self._dumps.empty():
            self._dumps.get_nowait()
        self.send("dump")
        return await asyncio.wait_for(self._dumps.get(), timeout)

    def signal(self, sig: signal.Signals) -> None:
        if self.alive:
            os.kill(self.proc.pid, sig)

    async def close(self) -> None:
        """Kill the process (if it still runs) and collect it."""
        if self.alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGCONT)
                self.proc.kill()
        await self.proc.wait()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(self._reader, 5)
        self._log.close()


@contextlib.asynccontextmanager
async def agent_processes() -> AsyncIterator[list[AgentProcess]]:
    """A list the test fills with agent hosts; every one is killed at the end."""
    hosts: list[AgentProcess] = []
    try:
        yield hosts
    finally:
        await asyncio.gather(*(host.close() for host in hosts), return_exceptions=True)


STARTUP = re.compile(r"orchestrator listening host=\(\S*\) port=\((\d+)\)")


class Daemon:
    """``python -m fleet_server`` as a subprocess; its stderr goes to a log file."""

    def __init__(
        self, proc: asyncio.subprocess.Process, log_path: Path, port: int, offset: int = 0
    ) -> None:
        self.proc = proc
        self.log_path = log_path
        self.port = port
        self._offset = offset  # where this run's lines begin in the log

    @classmethod
    async def start(cls, port: int, log_path: Path, *args: str, wait: bool = True) -> Daemon:
        """Run the daemon; with ``wait``, return once it says it listens (else call
        :meth:`wait_listening`)."""
        log = log_path.open("ab")
        try:
            offset = log.tell()
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "fleet_server",
                "-H",
                "127.0.0.1",
                "-p",
                str(port),
                "--agent-key",
                KEY,
                "--admin-key",
                ADMIN,
                "--no-grpc",
                *args,
                cwd=ROOT,
                env=env_without_fleet(PYTHONPATH=str(ROOT)),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=log,
            )
        finally:
            log.close()
        daemon = cls(proc, log_path, port, offset)
        if wait:
            await daemon.wait_listening()
        return daemon

    async def wait_listening(self) -> None:
        await wait_for(lambda: STARTUP.search(self.log(self._offset)), START_TIMEOUT_S, step=0.02)

    def log(self, offset: int = 0) -> str:
        with self.log_path.open("rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")

    @property
    def alive(self) -> bool:
        return self.proc.returncode is None

    def signal(self, sig: signal.Signals) -> None:
        if self.alive:
            os.kill(self.proc.pid, sig)

    def kill(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.kill()

    async def close(self) -> None:
        self.kill()
        await self.proc.wait()


def owners(hosts: Iterable[AgentProcess]) -> dict[str, str]:
    """Every instance id the hosts' agents ever joined as, with its process_uid."""
    return {join.instance_id: join.process_uid for host in hosts for join in host.joins}


async def wait_listed(
    instances: Callable[[], Awaitable[list[dict[str, Any]]]],
    process_uids: Iterable[str],
    timeout: float = 10.0,
) -> None:
    """Wait until the orchestrator lists an instance of each of ``process_uids``: an
    agent reports it joined once its Hello came, the orchestrator lists it once its
    first reply is applied (a create placed on it before then is INSTANCE_NOT_FOUND)."""
    wanted = set(process_uids)

    async def listed() -> bool:
        return wanted <= {row["processUid"] for row in await instances()}

    await wait_for(listed, timeout, 0.02)


async def agents_rooms(hosts: Iterable[AgentProcess]) -> dict[str, list[str]]:
    """The rooms each agent of the live hosts holds: process_uid -> room ids."""
    rooms: dict[str, list[str]] = {}
    for dump in await asyncio.gather(*(host.dump() for host in hosts if host.alive)):
        rooms.update(dump)
    return rooms


def copies(rooms: dict[str, list[str]]) -> list[str]:
    """Room ids held by two agents (or twice by one): what must never happen."""
    seen: dict[str, str] = {}
    found: list[str] = []
    for uid, room_ids in rooms.items():
        for room_id in room_ids:
            if room_id in seen:
                found.append(f"{room_id} on {seen[room_id]} and {uid}")
            seen[room_id] = uid
    return found


Rows = list[dict[str, Any]]


class RoomWatch:
    """Reads the room list every ``every_s`` while a test runs and checks each read: no
    id listed twice and none namespaced (``<processUid>~<id>``, the mark SPEC §7.3 puts
    on a second copy). ``read`` returns the rows, or None when nobody answered.

    :attr:`seen` keeps, for each id, when it was first listed and on which instance;
    :attr:`where` every instance it was ever listed on.
    """

    def __init__(self, read: Callable[[], Awaitable[Rows | None]], every_s: float) -> None:
        self._read = read
        self._every_s = every_s
        self.seen: dict[str, tuple[float, str]] = {}
        self.where: dict[str, set[str]] = {}
        self.violations: list[str] = []
        self.reads = 0
        self._task: asyncio.Task[None] | None = None

    def check(self, rows: Rows) -> None:
        self.reads += 1
        now = time.monotonic()
        listed: set[str] = set()
        for row in rows:
            room_id, instance_id = row["id"], row["instanceId"]
            if room_id in listed:
                self.violations.append(f"{room_id} listed twice")
            if "~" in room_id:
                self.violations.append(f"{room_id}: a namespaced copy")
            listed.add(room_id)
            self.seen.setdefault(room_id, (now, instance_id))
            self.where.setdefault(room_id, set()).add(instance_id)

    async def _run(self) -> None:
        while True:
            rows = await self._read()
            if rows is not None:
                self.check(rows)
            await asyncio.sleep(self._every_s)

    async def __aenter__(self) -> Self:
        self._task = asyncio.create_task(self._run(), name="room-watch")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


class TcpProxy:
    """Forwards TCP connections from its own port on 127.0.0.1 to ``target_port``;
    :meth:`cut` aborts every connection through it at both ends (a reset, no close
    frame: a network failure). New connections go through as before."""

    def __init__(self, target_port: int) -> None:
        self._target_port = target_port
        self._server: asyncio.Server | None = None
        self._pairs: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    async def start(self) -> Self:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/"

    def cut(self) -> int:
        """Abort every open connection; how many there were."""
        pairs, self._pairs = self._pairs, set()
        for near, far in pairs:
            near.transport.abort()
            far.transport.abort()
        return len(pairs)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        self.cut()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            far_reader, far_writer = await asyncio.open_connection("127.0.0.1", self._target_port)
        except OSError:
            writer.transport.abort()
            return
        pair = (writer, far_writer)
        self._pairs.add(pair)
        pumps = [
            asyncio.create_task(_pump(reader, far_writer)),
            asyncio.create_task(_pump(far_reader, writer)),
        ]
        self._tasks.update(pumps)
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._pairs.discard(pair)
            writer.transport.abort()
            far_writer.transport.abort()
            for pump in pumps:
                pump.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            self._tasks.difference_update(pumps)


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
