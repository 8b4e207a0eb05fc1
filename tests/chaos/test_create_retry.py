"""A create that times out (504) or loses its agent mid-command (502), retried with the
same id every 20 ms: never a second room (CONTRACT §9).

A 504 or a 502 does not say whether the game server made the room: it may have. The
matchmaker retries the id every 20 ms, naming a healthy game server (the *spare*) as a
matchmaker that moves on from a failing one would. Every retry must answer ``409
ROOM_EXISTS`` for as long as the failing agent may have the room; once that agent is
back its room is listed, on it; if it never comes back (SIGKILL) the id is free again
after ``--orphan-hold`` and the retry gets 201 on the spare. Twenty ids of each kind,
real daemon, real agent processes (each agent a FleetAgent with its own process_uid);
the room list is read every 50 ms throughout and no id is ever on two instances, nor
under a namespaced ``<processUid>~<id>``, nor on two game servers at the end.
"""

from __future__ import annotations

import asyncio
import collections
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from tests.support.clients import Rest, cause
from tests.support.figures import report
from tests.support.orchestrators import agent_url
from tests.support.ports import free_port
from tests.support.waits import wait_for

from .support import (
    AgentProcess,
    Daemon,
    RoomWatch,
    TcpProxy,
    agent_processes,
    agents_rooms,
    copies,
    owners,
)

HEARTBEAT_MS = 250
ORPHAN_HOLD_MS = 3000  # well past the time an agent that comes back takes, under load
HOLD_S = ORPHAN_HOLD_MS / 1000
RETRY_S = 0.02  # the matchmaker's retry interval
AFTER_LISTED = 5  # retries still sent (and refused) once the id is listed on its agent
SETTLE_S = 10.0  # how long one try may take to end, at most


@dataclass(eq=False)
class Try:
    """One id: its first create, pinned to ``puid``, and the retries after it."""

    room_id: str
    puid: str
    comes_back: bool  # whether the agent that got the first create returns
    first: tuple[int, str | None] | None = None
    first_at: float = 0.0
    sent_at: float = 0.0
    answers: collections.Counter[str] = field(default_factory=collections.Counter)
    created_at: float | None = None  # the retry that got 201
    created_on: str | None = None  # its instance id
    listed_at: float | None = None  # seen listed on its own agent
    violations: list[str] = field(default_factory=list)


class Run:
    """The daemon's REST API, the room watch and the agent hosts of one scenario."""

    def __init__(self, rest: Rest, watch: RoomWatch, hosts: list[AgentProcess]) -> None:
        self.rest = rest
        self.watch = watch
        self.hosts = hosts
        self.spare = ""

    def tries(self, host: AgentProcess, tag: str, *, comes_back: bool) -> list[Try]:
        return [
            Try(f"{tag}-{host.name}-{slot}", host.latest(slot).process_uid, comes_back)
            for slot in sorted(host.slots())
        ]

    async def run(self, attempt: Try) -> None:
        """The first create (a ``lag`` room pinned to the try's agent), then retries."""
        attempt.sent_at = time.monotonic()
        status, body = await self.rest.create("lag", attempt.room_id, processUid=attempt.puid)
        attempt.first, attempt.first_at = (status, cause(body)), time.monotonic()
        await self.retry(attempt)

    async def retry(self, attempt: Try) -> None:
        """Every 20 ms, the same id on the spare: 409 until the id is listed on its own
        agent (then a few more 409s) or, for an agent that never returns, one 201."""
        deadline = time.monotonic() + SETTLE_S
        after_listed = 0
        while time.monotonic() < deadline:
            status, body = await self.rest.create("match", attempt.room_id, processUid=self.spare)
            answer = (status, cause(body))
            attempt.answers[f"{status} {answer[1] or ''}".strip()] += 1
            if status == 201:
                attempt.created_at = time.monotonic()
                attempt.created_on = body["data"]["instanceId"]
                if attempt.comes_back:
                    attempt.violations.append(f"{attempt.room_id}: retry created it (201)")
                return
            if answer != (409, "ROOM_EXISTS"):
                attempt.violations.append(f"{attempt.room_id}: retry answered {answer}")
                return
            if attempt.listed_at is None and self.listed_on_own_agent(attempt):
                attempt.listed_at = time.monotonic()
            if attempt.listed_at is not None:
                after_listed += 1
                if after_listed >= AFTER_LISTED:
                    return
            await asyncio.sleep(RETRY_S)
        attempt.violations.append(f"{attempt.room_id}: not settled within {SETTLE_S} s")

    def listed_on_own_agent(self, attempt: Try) -> bool:
        seen = self.watch.seen.get(attempt.room_id)
        return seen is not None and owners(self.hosts).get(seen[1]) == attempt.puid

    async def audit(self, tries: list[Try]) -> None:
        """Nothing on two instances, ever; each id on the agent it belongs to; the read
        model and the agents' own room lists agree."""
        violations = [v for t in tries for v in t.violations]
        assert not violations, violations
        who = owners(self.hosts)

        async def agreed() -> dict[str, list[str]] | None:
            rooms = await agents_rooms(self.hosts)
            status, body = await self.rest.call("GET", "/v1/rooms")
            assert status == 200, body
            self.watch.check(body["data"])
            listed = {(row["id"], who.get(row["instanceId"])) for row in body["data"]}
            held = {(room_id, uid) for uid, ids in rooms.items() for room_id in ids}
            return rooms if listed == held else None

        rooms = await wait_for(agreed, 5, step=0.1, message="read model != the agents' rooms")
        assert not copies(rooms), copies(rooms)
        assert not self.watch.violations, self.watch.violations
        for attempt in tries:
            home = attempt.puid if attempt.comes_back else self.spare
            listed_by = {who.get(iid, iid) for iid in self.watch.where.get(attempt.room_id, ())}
            assert listed_by == {home}, (attempt.room_id, listed_by, home)
            assert attempt.room_id in rooms[home], attempt.room_id


async def run_tries(run: Run, tries: list[Try], fault: Callable[[], Awaitable[None]]) -> None:
    """Send every first create, wait until each agent is creating its room, do the fault,
    then let each try retry to its end."""
    jobs = [asyncio.ensure_future(run.run(attempt)) for attempt in tries]
    try:
        ids = {attempt.room_id for attempt in tries}
        await wait_for(
            lambda: ids <= set().union(*(host.creating for host in run.hosts)), 5, step=0.002
        )
        await fault()
        await asyncio.gather(*jobs)
    finally:
        for job in jobs:
            job.cancel()
        await asyncio.gather(*jobs, return_exceptions=True)


def figures(tries: list[Try], teardown_at: dict[str, float]) -> dict[str, Any]:
    back = [t for t in tries if t.comes_back]
    gone = [t for t in tries if not t.comes_back]
    first_ms = [(t.first_at - t.sent_at) * 1000 for t in tries]
    listed_ms = [((t.listed_at or 0) - t.first_at) * 1000 for t in back]
    freed_ms = [((t.created_at or 0) - teardown_at[t.room_id]) * 1000 for t in gone]
    return {
        "ids": len(tries),
        "agent_back": len(back),
        "agent_gone": len(gone),
        "first_answer_ms": f"{min(first_ms):.0f}-{max(first_ms):.0f}",
        "retries": sum(sum(t.answers.values()) for t in tries),
        "answers": dict(sum((t.answers for t in tries), collections.Counter[str]())),
        "listed_after_first_answer_ms": f"{min(listed_ms):.0f}-{max(listed_ms):.0f}",
        "free_after_teardown_ms": f"{min(freed_ms):.0f}-{max(freed_ms):.0f}",
    }


def check_outcomes(
    tries: list[Try], first: tuple[int, str], teardown_at: dict[str, float], run: Run
) -> None:
    for attempt in tries:
        assert attempt.first == first, (attempt.room_id, attempt.first)
        if attempt.comes_back:
            assert attempt.listed_at is not None, attempt.room_id
            assert attempt.created_at is None, attempt.room_id
            continue
        # Never back: held for --orphan-hold from the teardown, then free (201).
        assert attempt.created_at is not None, attempt.room_id
        freed_s = attempt.created_at - teardown_at[attempt.room_id]
        assert HOLD_S - 0.1 <= freed_s <= HOLD_S + 3, (attempt.room_id, freed_s)
        assert owners(run.hosts).get(attempt.created_on or "") == run.spare
        assert attempt.answers["409 ROOM_EXISTS"] >= 1


async def start_hosts(
    hosts: list[AgentProcess], log_dir: Path, *specs: tuple[str, str, int, float]
) -> list[AgentProcess]:
    """One agent host per ``(url, name, agents, lag_ms)``, each in ``hosts`` (killed at
    the end) as soon as it runs; returns them once every agent has joined."""
    made: list[AgentProcess] = []
    for url, name, agents, lag_ms in specs:
        host = await AgentProcess.start(
            url, name, log_dir, agents=agents, lag_ms=lag_ms, wait=False
        )
        hosts.append(host)
        made.append(host)
    await asyncio.gather(
        *(host.wait_slots(spec[2]) for host, spec in zip(made, specs, strict=True))
    )
    return made


async def start_daemon(tmp_path: Path, command_timeout_ms: int) -> Daemon:
    args: tuple[str, ...] = ("--heartbeat", str(HEARTBEAT_MS))
    args += ("--command-timeout", str(command_timeout_ms))
    args += ("--orphan-hold", str(ORPHAN_HOLD_MS))
    # The agents are started while it starts: they dial until it answers.
    return await Daemon.start(free_port(), tmp_path / "daemon.log", *args, wait=False)


async def test_a_504_retried_every_20ms_is_409_until_its_agent_lists_it_or_free_after_the_hold(
    tmp_path: Path,
) -> None:
    """Command timeout 200 ms; ``lag`` rooms take 450 ms (a late ack: the agent is kicked
    and rejoins) or 1,500 ms (the agent is evicted mid-create for missing polls and
    rejoins once it is done), or the agent's process is SIGKILLed after the 504."""
    daemon = await start_daemon(tmp_path, command_timeout_ms=200)
    try:
        async with aiohttp.ClientSession() as session, agent_processes() as hosts:
            rest = Rest(session, daemon.port)
            url = agent_url(daemon.port)
            late, evicted, doomed, spare = await start_hosts(
                hosts,
                tmp_path,
                (url, "late", 7, 450),
                (url, "evicted", 7, 1500),
                (url, "doomed", 6, 1500),
                (url, "spare", 1, 0),
            )

            async def read() -> list[dict[str, Any]] | None:
                status, body = await rest.call("GET", "/v1/rooms")
                return body["data"] if status == 200 else None

            async with RoomWatch(read, 0.05) as watch:
                run = Run(rest, watch, hosts)
                run.spare = spare.latest().process_uid
                tries = run.tries(late, "t504", comes_back=True)
                tries += run.tries(evicted, "t504", comes_back=True)
                gone = run.tries(doomed, "t504", comes_back=False)
                tries += gone
                teardown_at: dict[str, float] = {}

                async def kill_after_the_504s() -> None:
                    await wait_for(lambda: all(t.first for t in gone), 5, step=0.002)
                    doomed.signal(signal.SIGKILL)
                    teardown_at.update(dict.fromkeys((t.room_id for t in gone), time.monotonic()))

                await run_tries(run, tries, kill_after_the_504s)
                check_outcomes(tries, (504, "COMMAND_TIMEOUT"), teardown_at, run)
                await run.audit(tries)
            report("504 then retry every 20 ms", **figures(tries, teardown_at), reads=watch.reads)
    finally:
        await daemon.close()


async def test_a_502_retried_every_20ms_is_409_until_its_agent_lists_it_or_free_after_the_hold(
    tmp_path: Path,
) -> None:
    """The agent's socket goes mid-create (``lag`` rooms of 400–1,000 ms; command timeout
    5 s): a network cut (a proxy resets both ends; the agent rejoins through it once its
    create is done), SIGSTOP until the agent is evicted for missing polls then SIGCONT
    (its create completes, it rejoins), or SIGKILL (it never returns)."""
    daemon = await start_daemon(tmp_path, command_timeout_ms=5000)
    proxy = await TcpProxy(daemon.port).start()
    try:
        async with aiohttp.ClientSession() as session, agent_processes() as hosts:
            rest = Rest(session, daemon.port)
            url = agent_url(daemon.port)
            cut, frozen, killed, spare = await start_hosts(
                hosts,
                tmp_path,
                (proxy.url, "cut", 10, 500),
                (url, "frozen", 5, 400),
                (url, "killed", 5, 1000),
                (url, "spare", 1, 0),
            )

            async def read() -> list[dict[str, Any]] | None:
                status, body = await rest.call("GET", "/v1/rooms")
                return body["data"] if status == 200 else None

            async with RoomWatch(read, 0.05) as watch:
                run = Run(rest, watch, hosts)
                run.spare = spare.latest().process_uid
                cuts = run.tries(cut, "t502", comes_back=True)
                stops = run.tries(frozen, "t502", comes_back=True)
                gone = run.tries(killed, "t502", comes_back=False)
                tries = cuts + stops + gone
                teardown_at: dict[str, float] = {}

                async def fault() -> None:
                    killed.signal(signal.SIGKILL)
                    teardown_at.update(dict.fromkeys((t.room_id for t in gone), time.monotonic()))
                    assert proxy.cut() == len(cuts)
                    frozen.signal(signal.SIGSTOP)
                    await wait_for(lambda: all(t.first for t in stops), 5, step=0.002)
                    await asyncio.sleep(0.3)  # retries meet the hold while it is frozen
                    frozen.signal(signal.SIGCONT)

                await run_tries(run, tries, fault)
                check_outcomes(tries, (502, "INSTANCE_DISCONNECTED"), teardown_at, run)
                await run.audit(tries)
            report("502 then retry every 20 ms", **figures(tries, teardown_at), reads=watch.reads)
    finally:
        await proxy.close()
        await daemon.close()
