"""The daemon killed with SIGKILL and restarted on the same port, agents attached.

The read model lives only in the daemon's memory; the agents hold the truth. After a
restart each agent reconnects with its backoff, and one poll later the daemon knows
its rooms again — ``local`` flags included, since they come from the agents. Creates
that were in flight at the kill are retried by the matchmaker with the same roomId:
once the owning agent is back the answer is ``409 ROOM_EXISTS``, never a second room.

A retry that lands *before* the owning agent is back cannot see the room: it is
placed elsewhere (201) and, when the owner rejoins, the two fleet rooms of one id are
tie-broken as SPEC §7.3 says — the earlier joiner keeps the id, the other copy is
listed as ``<processUid>~<id>``, and the daemon logs a warning naming both.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp

from tests.support.clients import Rest, cause
from tests.support.figures import report
from tests.support.orchestrators import agent_url
from tests.support.ports import free_port
from tests.support.waits import wait_for

from .support import AgentProcess, Daemon, Joined, agent_processes, wait_listed

HEARTBEAT_MS = 300
H = HEARTBEAT_MS / 1000
LAG_MS = 600  # a ``lag`` room takes this long to create, so its create is in flight


def by_id(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {row["id"]: row for row in rows}


async def wait_whole(rest: Rest, joined: Joined, expected: dict[str, bool]) -> float:
    """Poll the instance until it lists exactly ``expected`` ({room id: local});
    the monotonic time it first did."""
    last: Any = None

    async def whole() -> bool:
        nonlocal last
        status, body = await rest.call("GET", f"/v1/instances/{joined.instance_id}")
        if status != 200:
            return False
        last = {room["id"]: room["local"] for room in body["data"]["rooms"]}
        return bool(last == expected)

    await wait_for(
        whole, 10, message=lambda: f"instance {joined.instance_id} never listed {expected}: {last}"
    )
    return time.monotonic()


async def test_daemon_sigkill_and_restart_rebuilds_the_read_model_and_keeps_the_retry_contract(
    tmp_path: Path,
) -> None:
    port = free_port()
    log = tmp_path / "daemon.log"
    args = ("--heartbeat", str(HEARTBEAT_MS), "--command-timeout", "5000")
    daemon = await Daemon.start(port, log, *args)
    try:
        async with aiohttp.ClientSession() as session, agent_processes() as hosts:
            rest = Rest(session, port)
            url = agent_url(port)
            a, b = await asyncio.gather(
                AgentProcess.start(url, "a", tmp_path, lag_ms=LAG_MS),
                AgentProcess.start(url, "b", tmp_path, lag_ms=LAG_MS),
            )
            hosts += [a, b]
            pa, pb = a.latest().process_uid, b.latest().process_uid
            a.send("local 0 a-local")
            b.send("local 0 b-local")
            await wait_listed(rest.instances, (pa, pb))
            for room_id, puid in (("a-fleet", pa), ("b-fleet", pb)):
                status, body = await rest.create("match", room_id, processUid=puid)
                assert status == 201, body

            async def all_listed() -> bool:
                listed = {row["id"] for row in await rest.rooms()}
                return listed == {"a-local", "b-local", "a-fleet", "b-fleet"}

            await wait_for(all_listed, 5, step=0.02)

            # Creates in flight at the kill: each agent is inside a 600 ms room creation.
            inflight = [
                asyncio.ensure_future(rest.create("lag", "inflight-a", processUid=pa)),
                asyncio.ensure_future(rest.create("lag", "inflight-b", processUid=pb)),
            ]
            await asyncio.sleep(0.2)
            a_before, b_before = a.latest().instance_id, b.latest().instance_id
            a.signal(signal.SIGSTOP)  # a stays away until we let it go
            daemon.kill()
            answers = await asyncio.gather(*inflight)
            assert [status for status, _ in answers] == [0, 0]  # no answer: the daemon died
            await daemon.close()
            killed = time.monotonic()

            daemon = await Daemon.start(port, log, *args)
            restarted = time.monotonic()
            offset_after_restart = len(daemon.log())
            b_back = await b.wait_rejoin(0, after=b_before)
            b_whole = await wait_whole(
                rest, b_back, {"b-local": True, "b-fleet": False, "inflight-b": False}
            )
            # The owner is back: the retry finds its room.
            status, body = await rest.create("lag", "inflight-b", processUid=pb)
            assert (status, cause(body)) == (409, "ROOM_EXISTS")

            # a is still away: a retry of its in-flight create cannot see that room.
            status, body = await rest.create("match", "inflight-a")
            assert status == 201, body
            assert body["data"]["instanceId"] == b_back.instance_id
            a.signal(signal.SIGCONT)
            a_back = await a.wait_rejoin(0, after=a_before)
            namespaced = f"{pa}~inflight-a"
            a_whole = await wait_whole(
                rest, a_back, {"a-local": True, "a-fleet": False, namespaced: False}
            )
            # SPEC §7.3: two fleet rooms share the id; the earlier joiner (b) keeps it.
            rooms = by_id(await rest.rooms())
            assert rooms["inflight-a"]["instanceId"] == b_back.instance_id
            assert rooms[namespaced]["instanceId"] == a_back.instance_id
            await wait_for(lambda: "duplicate fleet room id" in daemon.log(offset_after_restart), 5)
            warning = next(
                line
                for line in daemon.log(offset_after_restart).splitlines()
                if "duplicate fleet room id" in line
            )
            assert b_back.instance_id in warning and a_back.instance_id in warning
            assert namespaced in warning

            # Every id is now answered 409, and a new one 201.
            for room_id in ("inflight-a", "inflight-b", "a-fleet", "b-fleet"):
                status, body = await rest.create("match", room_id)
                assert (status, cause(body)) == (409, "ROOM_EXISTS"), room_id
            status, body = await rest.create("match", "fresh")
            assert status == 201, body
            report(
                "daemon sigkill + restart",
                heartbeat_ms=HEARTBEAT_MS,
                restart_ms=(restarted - killed) * 1000,
                b_rejoin_after_restart_ms=(b_back.at - restarted) * 1000,
                b_whole_after_rejoin_ms=(b_whole - b_back.at) * 1000,
                a_whole_after_rejoin_ms=(a_whole - a_back.at) * 1000,
            )
            assert b_whole - b_back.at < H and a_whole - a_back.at < H

            # Again, with both agents running: whoever rejoins first keeps the shared id.
            local_before = {row["id"]: row["local"] for row in await rest.rooms()}
            a_before, b_before = a_back.instance_id, b_back.instance_id
            daemon.kill()
            await daemon.close()
            daemon = await Daemon.start(port, log, *args)
            a_back, b_back = await asyncio.gather(
                a.wait_rejoin(0, after=a_before), b.wait_rejoin(0, after=b_before)
            )

            async def relisted() -> bool:
                return len(await rest.rooms()) == len(local_before)

            await wait_for(relisted, 5, step=0.01)
            instances = await rest.instances()
            order = [row["id"] for row in instances]  # join order
            rooms = by_id(await rest.rooms())
            first, second = (a_back, b_back) if order[0] == a_back.instance_id else (b_back, a_back)
            assert order == [first.instance_id, second.instance_id]
            assert rooms["inflight-a"]["instanceId"] == first.instance_id
            assert rooms[f"{second.process_uid}~inflight-a"]["instanceId"] == second.instance_id
            plain = {k: v for k, v in local_before.items() if "~" not in k}
            assert {k: rooms[k]["local"] for k in plain} == plain  # local flags survive
            for room_id in ("inflight-a", "inflight-b", "a-fleet", "b-fleet", "fresh"):
                status, body = await rest.create("match", room_id)
                assert (status, cause(body)) == (409, "ROOM_EXISTS"), room_id
    finally:
        await daemon.close()
