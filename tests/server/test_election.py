"""Leader election on a real etcd (CONTRACT §10, docs/high-availability.md §3)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from fleet_server._election import (
    Election,
    EtcdUnavailableError,
    MemberInfo,
    backoff_s,
)
from fleet_server._etcd import Endpoint, EtcdClient, connect
from tests.support.election_node import node_info
from tests.support.etcd import EtcdServer
from tests.support.ports import free_port
from tests.support.waits import wait_for

LEASE_MS = 3000
LEASE_S = LEASE_MS / 1000
RETRY = re.compile(r"campaigns again in ([0-9.]+) s")
ROOT = Path(__file__).resolve().parents[2]


class Elections:
    """Makes started elections of cluster ``test`` on one etcd, counts each one's
    ``on_change`` calls, and closes them all at the end."""

    def __init__(self, etcd: EtcdServer) -> None:
        self.etcd = etcd
        self.made: list[Election] = []
        self.changes: dict[str, int] = {}

    async def __call__(
        self,
        node_id: str,
        *,
        endpoints: list[str] | None = None,
        lease_ms: int = LEASE_MS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> Election:
        self.changes[node_id] = 0

        def changed() -> None:
            self.changes[node_id] += 1

        election = Election(
            endpoints=endpoints or [self.etcd.endpoint],
            cluster="test",
            node=node_info(node_id),
            lease_ms=lease_ms,
            on_change=changed,
            monotonic=monotonic,
        )
        self.made.append(election)
        await election.start()
        return election

    async def close(self) -> None:
        for election in self.made:
            await election.close()


@pytest.fixture
async def elections(etcd: EtcdServer) -> AsyncIterator[Elections]:
    made = Elections(etcd)
    try:
        yield made
    finally:
        await made.close()


@pytest.fixture
async def raw(etcd: EtcdServer) -> AsyncIterator[EtcdClient]:
    """A plain etcd client, to do to the keys what a failure or an operator would."""
    client = await connect([Endpoint.parse(etcd.endpoint)], timeout=2, open_timeout=5)
    try:
        yield client
    finally:
        await client.close()


def leaders(nodes: list[Election]) -> list[Election]:
    return [node for node in nodes if node.is_leader()]


async def test_a_single_node_becomes_the_leader(elections: Elections) -> None:
    before = int(time.time() * 1000)
    a = await elections("a")
    await wait_for(a.is_leader, 10)
    assert a.role == "leader"
    assert a.leader is not None
    assert (a.leader.id, a.leader.url, a.leader.agent_url) == ("a", *_urls("a"))
    assert before <= a.leader.since <= int(time.time() * 1000)
    assert a.members == [MemberInfo("a", "http://a.test:7350", "leader")]
    assert elections.changes["a"] >= 1


async def test_three_nodes_elect_exactly_one_leader_and_agree_on_it(
    elections: Elections,
) -> None:
    nodes = [await elections(name) for name in ("a", "b", "c")]

    def settled() -> bool:
        seen = {node.leader for node in nodes}
        roles = [member.role for member in nodes[0].members]
        return (
            len(leaders(nodes)) == 1
            and len(seen) == 1
            and None not in seen
            and all(len(node.members) == 3 for node in nodes)
            and sorted(roles) == ["leader", "standby", "standby"]
        )

    await wait_for(settled, 10, message=lambda: _describe(nodes))
    (leader,) = leaders(nodes)
    assert {_leader_id(node) for node in nodes} == {leader.node.id}
    assert [m.id for m in nodes[1].members] == ["a", "b", "c"]
    assert all(node.role == "standby" for node in nodes if node is not leader)

    standby = next(node for node in nodes if node is not leader)
    await standby.close()
    await wait_for(lambda: len(leader.members) == 2, 5, message=lambda: str(leader.members))
    assert leader.is_leader()


async def test_when_the_leader_closes_another_leads_within_the_lease(
    elections: Elections,
) -> None:
    nodes = [await elections(name) for name in ("a", "b", "c")]
    await wait_for(lambda: len(leaders(nodes)) == 1, 10)
    (old,) = leaders(nodes)
    rest = [node for node in nodes if node is not old]
    started = time.monotonic()
    await old.close()
    assert not old.is_leader()
    await wait_for(lambda: len(leaders(rest)) == 1, LEASE_S + 2, message=lambda: _describe(rest))
    took = time.monotonic() - started
    (new,) = leaders(rest)
    await wait_for(lambda: {_leader_id(node) for node in rest} == {_leader_id(new)}, 5)
    print(f"failover after close: {took * 1000:.0f} ms")


async def test_a_leader_whose_etcd_is_paused_steps_down_within_the_lease(
    elections: Elections, etcd: EtcdServer
) -> None:
    a = await elections("a")
    await wait_for(a.is_leader, 10)
    changes = elections.changes["a"]
    etcd.pause()
    started = time.monotonic()
    await wait_for(lambda: not a.is_leader(), LEASE_S)
    took = time.monotonic() - started
    assert a.role == "standby"
    assert a.leader is None
    # is_leader() reads the clock; the watchdog that tells on_change fires at the same
    # deadline, in its own loop callback (which a loaded machine may run a little later)
    await wait_for(lambda: elections.changes["a"] > changes, 1)
    await asyncio.sleep(0.3)  # etcd stays paused: the node keeps retrying, nothing crashes
    assert not a.is_leader()
    etcd.resume()
    await wait_for(a.is_leader, LEASE_S + 10)
    print(f"step-down after etcd paused: {took * 1000:.0f} ms")


async def test_fenced_writes_succeed_while_leading_and_fail_once_deposed(
    elections: Elections, raw: EtcdClient
) -> None:
    a = await elections("a")
    await wait_for(a.is_leader, 10)
    assert await a.read("membership") is None
    assert await a.fenced_put("membership", b"one")
    assert await a.read("membership") == b"one"

    keys, _ = await raw.get_range("/rivalis-fleet/test/election/", "/rivalis-fleet/test/election0")
    (own,) = keys
    await raw.delete(own.key)  # an operator, or a lease that expired, takes the key away
    assert not await a.fenced_put("membership", b"two")
    # Read through another client: the node's session is ending (its key is gone) and
    # closes its own connection meanwhile.
    found = await raw.get("/rivalis-fleet/test/membership")
    assert found is not None and found.value == b"one"

    await wait_for(a.is_leader, LEASE_S + 5)  # it campaigns again with a new key
    assert await a.fenced_put("membership", b"three")
    assert await a.read("membership") == b"three"


async def test_etcd_refuses_a_write_fenced_by_a_key_that_is_gone(raw: EtcdClient) -> None:
    revision = await raw.create("/t/election/1", b"{}", lease=0)
    assert revision is not None
    assert await raw.put_if_created("/t/election/1", revision, "/t/membership", b"a")
    await raw.delete("/t/election/1")
    assert not await raw.put_if_created("/t/election/1", revision, "/t/membership", b"b")
    again = await raw.create("/t/election/1", b"{}", lease=0)  # same name, new revision
    assert again is not None and again != revision
    assert not await raw.put_if_created("/t/election/1", revision, "/t/membership", b"c")
    found = await raw.get("/t/membership")
    assert found is not None and found.value == b"a"


async def test_a_call_cut_short_by_closing_its_client_is_unavailable_not_a_cancellation(
    etcd: EtcdServer,
) -> None:
    """A session that ends closes its client under whatever still runs on it (a fenced
    write, the record's read at a takeover): those calls fail as etcd being unavailable,
    never as a cancellation of a task that nobody cancelled."""
    client = await connect([Endpoint.parse(etcd.endpoint)], timeout=5, open_timeout=5)
    etcd.pause()  # the read waits for an answer
    try:
        read = asyncio.ensure_future(client.get("/rivalis-fleet/test/membership"))
        await asyncio.sleep(0.2)
        await client.close()
        with pytest.raises(EtcdUnavailableError, match="closed"):
            await read
        assert not read.cancelled()
    finally:
        etcd.resume()


async def test_after_etcd_stops_and_restarts_a_leader_returns(
    elections: Elections, etcd: EtcdServer
) -> None:
    nodes = [await elections(name) for name in ("a", "b")]
    await wait_for(lambda: len(leaders(nodes)) == 1, 10)
    await etcd.astop()
    await wait_for(lambda: not leaders(nodes), LEASE_S)
    # each node stops vouching for its view when its own lease is ⅔ stale
    await wait_for(lambda: all(node.leader is None for node in nodes), LEASE_S)
    await asyncio.sleep(0.5)
    await etcd.astart()
    started = time.monotonic()
    await wait_for(lambda: len(leaders(nodes)) == 1, LEASE_S + 10, message=lambda: _describe(nodes))
    print(f"leader back {(time.monotonic() - started) * 1000:.0f} ms after etcd restarted")
    assert len(leaders(nodes)) == 1


async def test_after_a_long_etcd_outage_retries_stay_within_half_the_lease_and_a_leader_returns(
    elections: Elections, etcd: EtcdServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Retries back off, but never past half the lease: once etcd is back a leader is
    elected within the lease, however long etcd was away (a 3 s cap would let a node
    sleep past a 1 s lease)."""
    caplog.set_level(logging.DEBUG, logger="fleet.server")
    lease_s = 1.0
    a = await elections("a", lease_ms=int(lease_s * 1000))
    await wait_for(a.is_leader, 10)
    etcd.kill()

    def delays() -> list[float]:
        found = (RETRY.search(r.getMessage()) for r in caplog.records)
        return [float(m.group(1)) for m in found if m is not None]

    await wait_for(lambda: len(delays()) >= 7, 15)  # past where a 3 s cap is reached
    assert max(delays()) <= lease_s / 2, delays()
    await etcd.astart()
    started = time.monotonic()
    await wait_for(a.is_leader, lease_s + 10)
    took = time.monotonic() - started
    assert took <= lease_s + 0.5, took  # the lease, and scheduling noise


async def test_start_raises_naming_the_endpoint_when_no_etcd_answers() -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    election = Election(
        endpoints=[dead.replace("://", "://fleet:s3cret@")],
        cluster="test",
        node=node_info("a"),
        lease_ms=LEASE_MS,
        on_change=lambda: None,
    )
    with pytest.raises(EtcdUnavailableError) as caught:
        await election.start()
    assert dead in str(caught.value)
    assert "s3cret" not in str(caught.value)
    await election.close()


async def test_a_dead_endpoint_before_a_live_one_is_skipped(
    elections: Elections, etcd: EtcdServer
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    a = await elections("a", endpoints=[dead, etcd.endpoint])
    await wait_for(a.is_leader, 10)


async def test_a_leader_frozen_past_two_thirds_of_its_lease_refuses_at_once(
    elections: Elections,
) -> None:
    offset = [0.0]
    a = await elections("a", monotonic=lambda: time.monotonic() + offset[0])
    await wait_for(a.is_leader, 10)
    offset[0] = LEASE_S * 2 / 3  # as if the process had been stopped that long
    assert not a.is_leader()
    assert a.role == "standby"
    assert a.leader is None
    assert not await a.fenced_put("membership", b"late")
    await wait_for(a.is_leader, LEASE_S + 5)  # renewals on the new clock: it leads again


async def test_a_leader_whose_event_loop_is_saturated_keeps_its_lease(
    elections: Elections,
) -> None:
    """Every agent reconnecting at once: the loop runs every callback, but each loop
    iteration takes about 0.4 s, for more than two leases. The keepalives come from a
    thread of their own, so the leader never steps down (sent from the loop, each one
    waited for several iterations and the leader stepped down within a lease)."""
    a = await elections("a")
    await wait_for(a.is_leader, 10)
    changes = elections.changes["a"]
    lapses = 0
    with _saturated_loop(hogs=8, each_s=0.05):
        until = time.monotonic() + 2.5 * LEASE_S
        while time.monotonic() < until:
            lapses += not a.is_leader()
            await asyncio.sleep(0.05)
    assert lapses == 0
    assert a.is_leader()
    assert elections.changes["a"] == changes


async def test_a_leader_whose_event_loop_is_stuck_past_its_lease_has_stopped_leading(
    elections: Elections,
) -> None:
    """A loop that does not run at all (a callback that does not return) holds the
    keepalive thread's renewals back after a third of the lease: the node has stopped
    leading by its own clock when the loop runs again, and then campaigns afresh."""
    a = await elections("a")
    await wait_for(a.is_leader, 10)
    time.sleep(LEASE_S + 0.5)  # noqa: ASYNC251 - the point: the event loop is stuck
    assert not a.is_leader()
    assert a.leader is None
    await wait_for(a.is_leader, LEASE_S + 10)


async def test_a_killed_leader_is_replaced_once_its_lease_expires(
    elections: Elections, etcd: EtcdServer
) -> None:
    async with _node_process(etcd, "k") as proc:
        assert await _next_role(proc) == "leader"
        b = await elections("b")
        await wait_for(lambda: _leader_id(b) == "k", 5)
        proc.kill()
        started = time.monotonic()
        await wait_for(b.is_leader, LEASE_S + 2)
        print(f"failover after SIGKILL: {(time.monotonic() - started) * 1000:.0f} ms")


async def test_a_leader_stopped_past_its_lease_is_replaced_and_steps_down_on_resume(
    elections: Elections, etcd: EtcdServer
) -> None:
    async with _node_process(etcd, "s") as proc:
        assert await _next_role(proc) == "leader"
        b = await elections("b")
        await wait_for(lambda: _leader_id(b) == "s", 5)
        proc.send_signal(signal.SIGSTOP)
        started = time.monotonic()
        try:
            await wait_for(b.is_leader, LEASE_S + 2)
            print(f"failover after SIGSTOP: {(time.monotonic() - started) * 1000:.0f} ms")
        finally:
            proc.send_signal(signal.SIGCONT)
        assert await _next_role(proc) == "standby"
        assert b.is_leader()


def test_backoff_doubles_to_its_cap_with_jitter_in_its_upper_half() -> None:
    assert [backoff_s(n, lambda: 1.0) for n in range(7)] == [0.1, 0.2, 0.4, 0.8, 1.6, 3.0, 3.0]
    assert backoff_s(0, lambda: 0.0) == 0.05
    assert backoff_s(100, lambda: 0.0) == 1.5
    assert [backoff_s(n, lambda: 1.0, cap_s=1.0) for n in range(6)] == [0.1, 0.2, 0.4, 0.8, 1, 1]


@contextlib.contextmanager
def _saturated_loop(*, hogs: int, each_s: float) -> Iterator[None]:
    """``hogs`` callbacks that each keep the event loop busy for ``each_s`` seconds and
    schedule themselves again: every loop iteration runs them all."""
    loop = asyncio.get_running_loop()
    running = [True]

    def hog() -> None:
        until = time.perf_counter() + each_s
        while time.perf_counter() < until:
            pass
        if running[0]:
            loop.call_soon(hog)

    for _ in range(hogs):
        loop.call_soon(hog)
    try:
        yield
    finally:
        running[0] = False


def _leader_id(node: Election) -> str | None:
    return None if node.leader is None else node.leader.id


def _urls(name: str) -> tuple[str, str]:
    return f"http://{name}.test:7350", f"ws://{name}.test:7350"


def _describe(nodes: list[Election]) -> str:
    return "; ".join(f"{n.members} leader={n.leader}" for n in nodes)


@contextlib.asynccontextmanager
async def _node_process(
    etcd: EtcdServer, node_id: str
) -> AsyncIterator[asyncio.subprocess.Process]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.support.election_node",
        etcd.endpoint,
        node_id,
        str(LEASE_MS),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGCONT)
            proc.kill()
        await proc.wait()


async def _next_role(proc: asyncio.subprocess.Process) -> str:
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 20)
    return line.decode().strip()
