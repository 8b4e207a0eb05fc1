"""Processes for the chaos tests: agent hosts (``tests.chaos.agent_host``) and the daemon."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from tests.support.keys import ADMIN, KEY
from tests.support.orchestrators import env_without_fleet
from tests.support.waits import wait_for

__all__ = ["ROOT", "AgentProcess", "Daemon", "Joined", "agent_processes"]

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Joined:
    slot: int
    instance_id: str
    process_uid: str
    at: float  # time.monotonic() in the agent process (one clock for every process)


class AgentProcess:
    """One ``tests.chaos.agent_host`` subprocess and what it has said so far."""

    def __init__(self, proc: asyncio.subprocess.Process, name: str, log: IO[bytes]) -> None:
        self.proc = proc
        self.name = name
        self._log = log
        self.joins: list[Joined] = []
        self.left: set[int] = set()
        self._dumps: asyncio.Queue[dict[str, list[str]]] = asyncio.Queue()
        self._reader = asyncio.create_task(self._read(), name=f"agent-host-{name}")

    @classmethod
    async def start(
        cls, url: str, name: str, log_dir: Path, *, agents: int = 1, lag_ms: float = 500.0
    ) -> AgentProcess:
        log = (log_dir / f"{name}.log").open("ab")
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.chaos.agent_host",
            url,
            KEY,
            name,
            "--agents",
            str(agents),
            "--lag-ms",
            str(lag_ms),
            cwd=ROOT,
            env=env_without_fleet(PYTHONPATH=str(ROOT)),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=log,
        )
        host = cls(proc, name, log)
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
                slot, iid, puid, at = rest.split()
                self.joins.append(Joined(int(slot), iid, puid, float(at)))
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

    def __init__(self, proc: asyncio.subprocess.Process, log_path: Path, port: int) -> None:
        self.proc = proc
        self.log_path = log_path
        self.port = port

    @classmethod
    async def start(cls, port: int, log_path: Path, *args: str) -> Daemon:
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
        daemon = cls(proc, log_path, port)
        await wait_for(lambda: STARTUP.search(daemon.log(offset)), START_TIMEOUT_S, step=0.02)
        return daemon

    def log(self, offset: int = 0) -> str:
        with self.log_path.open("rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")

    def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()

    async def close(self) -> None:
        self.kill()
        await self.proc.wait()
