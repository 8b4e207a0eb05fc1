"""Churn: agents join, leave, lose their network and crash while a matchmaker creates
and destroys rooms with explicit ids at full speed; then an audit.

About 50 FleetAgents run in a few ``tests.chaos.agent_host`` processes. At random a
host starts one more agent (join), an agent disconnects for good (leave), an agent's
connection is cut without a close (a network blip: it reconnects with the same rooms),
or a whole host process is killed with SIGKILL (a crash) and replaced. Meanwhile eight
REST clients create rooms with fresh ids and destroy some of them.

Proven afterwards:

* every room acknowledged with 201 exists (on the agent process it was created on,
  never anywhere else), or was destroyed, or was lost with its instance;
* nothing the read model lists is unknown to the agents, and nothing the agents hold
  is missing from it;
* no room id ever lived on two instances at once: checked on every ``room:create``
  event during the run, on REST reads sampled during the run, and on the agents' own
  room lists at the end;
* with every agent gone, the orchestrator's state is empty and its memory (traced
  allocations) and asyncio task count are back at the baseline.

``CHURN_SECONDS`` sets the run's length (5 s in ``make test``, 60 s in ``make chaos``).
"""

from __future__ import annotations

import asyncio
import collections
import gc
import logging
import os
import random
import signal
import time
import tracemalloc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from fleet_server import Orchestrator
from fleet_server._link import AgentLink
from tests.support.clients import Rest, cause
from tests.support.figures import report
from tests.support.orchestrators import agent_url, running_orchestrator
from tests.support.waits import wait_for

from .support import AgentProcess, agent_processes

CHURN_SECONDS = float(os.environ.get("CHURN_SECONDS", "5"))
HOSTS = 5
AGENTS_PER_HOST = 10
CLIENTS = 8
HEARTBEAT_MS = 250
H = HEARTBEAT_MS / 1000
SEED = int(os.environ.get("CHURN_SEED", "20240601"))
UNCERTAIN = {0, 502, 504}  # no answer, INSTANCE_DISCONNECTED / COMMAND_FAILED, timeout


@dataclass
class Ledger:
    """What the matchmaker was told, and what the run observed."""

    acked: dict[str, str] = field(default_factory=dict)  # room id -> processUid at 201
    created_uncertain: set[str] = field(default_factory=set)
    destroyed: set[str] = field(default_factory=set)  # DELETE answered 200
    destroy_uncertain: set[str] = field(default_factory=set)
    statuses: collections.Counter[str] = field(default_factory=collections.Counter)
    retries: collections.Counter[int] = field(default_factory=collections.Counter)
    violations: list[str] = field(default_factory=list)
    uid_of: dict[str, str] = field(default_factory=dict)  # instance id -> processUid
    live: dict[str, str] = field(default_factory=dict)  # room id -> instance id (events)
    events: int = 0
    samples: int = 0

    def on_join(self, info: Any) -> None:
        self.uid_of[info.id] = info.process_uid

    def on_room_create(self, room: Any) -> None:
        self.events += 1
        if "~" in room.id:
            self.violations.append(f"event: room {room.id} is a namespaced duplicate")
        other = self.live.get(room.id)
        if other is not None and other != room.instance_id:
            self.violations.append(f"event: room {room.id} on {room.instance_id} and {other}")
        self.live[room.id] = room.instance_id

    def on_room_destroy(self, room: Any) -> None:
        self.events += 1
        if self.live.get(room.id) == room.instance_id:
            del self.live[room.id]

    def sample(self, rows: list[dict[str, Any]]) -> None:
        self.samples += 1
        ids = [row["id"] for row in rows]
        counts = collections.Counter(ids)
        for room_id, count in counts.items():
            if count > 1 or "~" in room_id:
                self.violations.append(f"read: room {room_id} listed {count}x")


class Churn:
    """The agent side: hosts, their agents, and the random acts done to them."""

    def __init__(self, orch: Orchestrator, hosts: list[AgentProcess], log_dir: Path) -> None:
        self.orch = orch
        self.hosts = hosts
        self.log_dir = log_dir
        self.url = agent_url(orch.port)
        self.acts: collections.Counter[str] = collections.Counter()
        self.peak_agents = 0
        self._spawned = 0
        self._starting: set[asyncio.Task[None]] = set()

    async def spawn(self) -> None:
        name = f"host{self._spawned}"
        self._spawned += 1
        host = await AgentProcess.start(self.url, name, self.log_dir, agents=AGENTS_PER_HOST)
        self.hosts.append(host)

    def live_hosts(self) -> list[AgentProcess]:
        return [host for host in self.hosts if host.alive]

    def agents(self) -> int:
        return sum(len(host.slots()) for host in self.live_hosts())

    def act(self, rng: random.Random) -> None:
        hosts = self.live_hosts()
        count = self.agents()
        self.peak_agents = max(self.peak_agents, count)
        roll = rng.random()
        if roll < 0.04 and len(hosts) > 1 and not self._starting:
            victim = rng.choice(hosts)
            victim.signal(signal.SIGKILL)
            self.acts["crash"] += 1
            task = asyncio.ensure_future(self.spawn())
            self._starting.add(task)
            task.add_done_callback(self._starting.discard)
        elif roll < 0.25:
            links = [link for link in self.orch.transport.links if not link.ws.closed]
            if links and cut(rng.choice(links)):
                self.acts["blip"] += 1
        elif (roll < 0.6 and count > 35) or count > 60:
            host = rng.choice(hosts)
            slots = sorted(host.slots())
            if slots:
                host.left.add(slot := rng.choice(slots))  # no more acts on it
                host.send(f"leave {slot}")
                self.acts["leave"] += 1
        elif hosts:
            rng.choice(hosts).send("join")
            self.acts["join"] += 1

    async def settle(self) -> None:
        await asyncio.gather(*self._starting)


def cut(link: AgentLink) -> bool:
    """Drop an agent's connection without a close frame, as a network failure does."""
    request = link.ws._req  # the server side of the socket
    transport = request.transport if request is not None else None
    if transport is None:
        return False
    transport.abort()
    return True


async def client(
    n: int, rest: Rest, ledger: Ledger, stop: asyncio.Event, rng: random.Random
) -> None:
    mine: list[str] = []
    counter = 0
    while not stop.is_set():
        room_id = f"c{n}-{counter}"
        counter += 1
        status, body = await rest.create("match", room_id)
        ledger.statuses[f"POST {status} {cause(body) or ''}".strip()] += 1
        if status == 504:  # the retry contract: same roomId → 201 or 409, never two rooms
            status, body = await rest.create("match", room_id)
            ledger.retries[status] += 1
            if status not in (201, 409, 502):
                ledger.violations.append(f"retry of {room_id} answered {status}")
        if status == 201:
            uid = ledger.uid_of.get(body["data"]["instanceId"])
            if uid is None:
                ledger.violations.append(f"room {room_id} acked on an unknown instance")
            else:
                ledger.acked[room_id] = uid
                mine.append(room_id)
        elif status in UNCERTAIN:
            ledger.created_uncertain.add(room_id)
        if mine and rng.random() < 0.5:
            victim = mine.pop(rng.randrange(len(mine)))
            status, body = await rest.destroy(victim)
            ledger.statuses[f"DELETE {status} {cause(body) or ''}".strip()] += 1
            if status == 200:
                ledger.destroyed.add(victim)
            elif status in UNCERTAIN:
                ledger.destroy_uncertain.add(victim)


async def sampler(rest: Rest, ledger: Ledger, stop: asyncio.Event) -> None:
    while not stop.is_set():
        ledger.sample(await rest.rooms())
        await asyncio.sleep(0.2)


def orchestrator_state(orch: Orchestrator) -> dict[str, int]:
    fleet = orch.fleet
    return {
        "links": len(orch.transport.links),
        "fleet_links": len(fleet._links),
        "reserved": len(fleet._reserved),
        "instances": len(fleet._read._instances),
        "joined": len(fleet._read._joined),
        "listener_tasks": len(orch._hub._tasks),
    }


# Allocations made by the orchestrator's code (each is charged to the line that made
# it), as opposed to this test's own bookkeeping, agent-host handles and HTTP client.
ORCHESTRATOR_CODE = (
    "*/fleet_server/*",
    "*/gateway/*",
    "*/fleet_agent/*",
    "*/aiohttp/web_*",
    "*/aiohttp/http_*",
    "*/aiohttp/_websocket/*",
    "*/aiohttp_sse/*",
)


def traced() -> tuple[int, tracemalloc.Snapshot]:
    """Every traced byte, and a snapshot of the orchestrator's own allocations."""
    gc.collect()
    snapshot = tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(True, pattern) for pattern in ORCHESTRATOR_CODE]
    )
    return tracemalloc.get_traced_memory()[0], snapshot


def total(snapshot: tracemalloc.Snapshot) -> int:
    return sum(stat.size for stat in snapshot.statistics("filename"))


def growth_by_kind(before: tracemalloc.Snapshot, after: tracemalloc.Snapshot) -> tuple[int, int]:
    """Bytes grown in single blocks (tables, caches) and in many blocks (residue)."""
    tables = residue = 0
    for stat in after.compare_to(before, "lineno"):
        if stat.size_diff <= 0:
            continue
        if stat.count <= 1:
            tables += stat.size_diff
        else:
            residue += stat.size_diff
    return tables, residue


class LogTally(logging.Handler):
    """Counts the orchestrator's log lines by level and message kind, keeping none."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.counts: collections.Counter[str] = collections.Counter()

    def emit(self, record: logging.LogRecord) -> None:
        kind = str(record.msg).split(" ", 2)
        self.counts[f"{record.levelname} {' '.join(kind[:2])}"] += 1


@pytest.mark.timeout(CHURN_SECONDS + 90)
async def test_churn_loses_and_duplicates_nothing_and_returns_to_baseline(
    tmp_path: Path,
) -> None:
    # The run's log records go to a tally, not to pytest's capture, which would keep
    # every record (and through its arguments, frames) alive past the baseline check.
    fleet_log = logging.getLogger("fleet")
    tally = LogTally()
    fleet_log.addHandler(tally)
    fleet_log.propagate = False
    tracemalloc.start()
    try:
        async with (
            running_orchestrator(
                api=True, heartbeat_ms=HEARTBEAT_MS, command_timeout_ms=2000
            ) as orch,
            agent_processes() as hosts,
        ):
            await warm_up(orch, tmp_path)
            assert orch._runner is not None and orch._runner.server is not None
            server = orch._runner.server
            tasks_before = len(asyncio.all_tasks())
            state_before = orchestrator_state(orch)
            memory_before, orch_before = traced()

            figures, violations = await run_churn(orch, hosts, tmp_path)
            assert not violations, violations[:20]

            # Everyone gone: the orchestrator must be back where it started.
            for host in hosts:
                host.signal(signal.SIGKILL)
            await wait_for(lambda: orch.fleet.stats.instances == 0, 10)
            await wait_for(lambda: orchestrator_state(orch) == state_before, 10)
            await wait_for(lambda: not server.connections, 10)
            await wait_for(lambda: len(asyncio.all_tasks()) <= tasks_before, 10)
            tasks_after = len(asyncio.all_tasks())
            await asyncio.gather(*(host.close() for host in hosts))
            hosts.clear()  # this test's handles on them are not the orchestrator's memory
            memory_after, orch_after = traced()
            growth = total(orch_after) - total(orch_before)
            if os.environ.get("CHURN_DEBUG"):
                for stat in orch_after.compare_to(orch_before, "lineno")[:20]:
                    print(stat)
            report("churn", **figures)
            report("churn log lines", **dict(tally.counts))
            report(
                "churn baseline",
                orchestrator_kib_before=total(orch_before) / 1024,
                orchestrator_growth_kib=growth / 1024,
                all_traced_growth_kib=(memory_after - memory_before) / 1024,
                tasks_before=tasks_before,
                tasks_after=tasks_after,
            )
            assert tasks_after <= tasks_before
            # What is left is bounded caches (the last list body, dict tables at their
            # high-water mark, URL caches), not a per-room or per-request residue: one
            # block per allocating line is a table or a cache, many blocks a residue.
            tables, residue = growth_by_kind(orch_before, orch_after)
            assert residue < 256 * 1024, (residue, tables)
            assert tables < 1024 * 1024, (residue, tables)
    finally:
        tracemalloc.stop()
        fleet_log.removeHandler(tally)
        fleet_log.propagate = True


async def run_churn(
    orch: Orchestrator, hosts: list[AgentProcess], log_dir: Path
) -> tuple[dict[str, Any], list[str]]:
    """The run and its audit; returns figures and violations (nothing else survives it)."""
    rng = random.Random(SEED)
    ledger = Ledger()
    unsubscribe = [
        orch.on("instance:join", ledger.on_join),
        orch.on("room:create", ledger.on_room_create),
        orch.on("room:destroy", ledger.on_room_destroy),
    ]
    churn = Churn(orch, hosts, log_dir)
    await asyncio.gather(*(churn.spawn() for _ in range(HOSTS)))
    await wait_for(lambda: orch.fleet.stats.instances == HOSTS * AGENTS_PER_HOST, 20)
    async with aiohttp.ClientSession() as session:
        rest = Rest(session, orch.port)
        stop = asyncio.Event()
        workers = [
            asyncio.ensure_future(client(n, rest, ledger, stop, random.Random(rng.random())))
            for n in range(CLIENTS)
        ]
        workers.append(asyncio.ensure_future(sampler(rest, ledger, stop)))
        started = time.monotonic()
        while time.monotonic() - started < CHURN_SECONDS:
            churn.act(rng)
            await asyncio.sleep(rng.uniform(0.05, 0.25))
        stop.set()
        await asyncio.wait_for(asyncio.gather(*workers), 30)
        elapsed = time.monotonic() - started
    await churn.settle()

    # Quiet now: every live agent gets back into the read model (a cut one reconnects,
    # a joining one finishes its handshake), and reads trail the agents by ≤ 1 poll.
    # Audit what the agents hold against the read model until they agree (or 10 s pass).
    live = churn.live_hosts()
    await wait_for(lambda: orch.fleet.stats.instances == churn.agents(), 20)
    deadline = time.monotonic() + 10
    while True:
        await asyncio.sleep(2 * H)
        dumps: dict[str, list[str]] = {}
        for host in live:
            dumps.update(await host.dump())
        audit = audit_rooms(orch, ledger, dumps)
        if not audit["violations"] or time.monotonic() > deadline:
            break
    for off in unsubscribe:
        off()
    violations = ledger.violations + audit.pop("violations")
    figures = {
        "seconds": elapsed,
        "peak_agents": churn.peak_agents,
        "acts": dict(churn.acts),
        "requests_per_s": sum(ledger.statuses.values()) / elapsed,
        "statuses": dict(ledger.statuses),
        "retries_after_504": dict(ledger.retries),
        "room_events": ledger.events,
        "read_samples": ledger.samples,
        **audit,
    }
    return figures, violations


async def warm_up(orch: Orchestrator, log_dir: Path) -> None:
    """Exercise every path once, so first-use caches are in the baseline, not the growth."""
    host = await AgentProcess.start(agent_url(orch.port), "warm", log_dir, agents=2)
    try:
        await wait_for(lambda: orch.fleet.stats.instances == 2, 10)
        async with aiohttp.ClientSession() as session:
            rest = Rest(session, orch.port)
            for i in range(20):
                status, _ = await rest.create("match", f"warm-{i}")
                assert status == 201
                await rest.rooms()
                if i % 2:
                    assert (await rest.destroy(f"warm-{i}"))[0] == 200
            cut(next(iter(orch.transport.links)))
            await wait_for(lambda: orch.fleet.stats.instances == 2, 10)
    finally:
        await host.close()
    await wait_for(lambda: orch.fleet.stats.instances == 0, 10)


def audit_rooms(orch: Orchestrator, ledger: Ledger, dumps: dict[str, list[str]]) -> dict[str, Any]:
    """Classify every acknowledged room; collect what breaks the rules."""
    violations: list[str] = []
    listed: dict[str, str] = {}  # room id -> processUid, from the read model
    for instance in orch.fleet.instances:
        for room in instance.rooms:
            if room.id in listed or "~" in room.id:
                violations.append(f"final read: room {room.id} twice")
            listed[room.id] = instance.process_uid
    held: dict[str, str] = {}  # room id -> processUid, from the agents themselves
    for uid, room_ids in dumps.items():
        for room_id in room_ids:
            if room_id in held:
                violations.append(f"agents: room {room_id} on {held[room_id]} and {uid}")
            held[room_id] = uid
    if listed != held:
        missing = sorted(set(held.items()) - set(listed.items()))[:5]
        extra = sorted(set(listed.items()) - set(held.items()))[:5]
        violations.append(f"read model != agents: missing {missing} extra {extra}")
    live_uids = set(dumps)
    tally: collections.Counter[str] = collections.Counter()
    for room_id, uid in ledger.acked.items():
        if room_id in listed:
            if listed[room_id] != uid:
                violations.append(f"room {room_id} moved from {uid} to {listed[room_id]}")
            if room_id in ledger.destroyed:
                violations.append(f"room {room_id} destroyed (200) but still listed")
            tally["exists"] += 1
        elif room_id in ledger.destroyed:
            tally["destroyed"] += 1
        elif uid not in live_uids:
            tally["lost_with_instance"] += 1
        elif room_id in ledger.destroy_uncertain:
            tally["destroyed_unacked"] += 1  # the destroy ran; its ack was cut off
        else:
            violations.append(f"room {room_id} (201 on {uid}) vanished from a live agent")
    for room_id in listed:
        if room_id not in ledger.acked:
            if room_id in ledger.created_uncertain:
                tally["orphans_of_failed_creates"] += 1  # 502 while the agent did create it
            else:
                violations.append(f"room {room_id} listed but never created")
    return {
        "acked": len(ledger.acked),
        **tally,
        "live_agents": len(dumps),
        "violations": violations,
    }
