"""The daemon restarted with a membership store (``--state``): no id on two instances.

``test_daemon_restart`` shows the window without a store: a retry that lands before
its owner is back is placed elsewhere. With ``--state`` the restarted daemon knows
which game servers were joined, and a create that names its id waits (503
``NOT_READY`` + ``Retry-After``) until they are all back or ``--settle`` passes;
creates without an id go through at once. SIGTERM writes every room id as an orphan
hold too, so they stay taken whatever happens.
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

from .support import AgentProcess, Daemon, agent_processes, wait_listed

HEARTBEAT_MS = 300
LAG_MS = 600


def assert_no_duplicates(rooms: list[dict[str, Any]]) -> None:
    """No id listed twice, and no namespaced copy (``<processUid>~<id>``) of one."""
    ids = [row["id"] for row in rooms]
    assert len(ids) == len(set(ids)), ids
    assert not [room_id for room_id in ids if "~" in room_id], ids


async def test_restart_with_state_settles_explicit_ids_and_never_duplicates(
    tmp_path: Path,
) -> None:
    port = free_port()
    log = tmp_path / "daemon.log"
    state = tmp_path / "fleet-state.json"
    args: tuple[str, ...] = ("--heartbeat", str(HEARTBEAT_MS), "--command-timeout", "5000")
    args += ("--state", str(state), "--settle", "20000")
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
            await wait_listed(rest.instances, (pa, pb))
            for room_id, puid in (("a-fleet", pa), ("b-fleet", pb)):
                status, body = await rest.create("match", room_id, processUid=puid)
                assert status == 201, body
            await wait_for(lambda: state.exists() and pa in state.read_text(), 3)
            await asyncio.sleep(1.2)  # the record has caught up with both joins

            # SIGKILL with a create in flight on each; a stays away.
            inflight = [
                asyncio.ensure_future(rest.create("lag", "inflight-a", processUid=pa)),
                asyncio.ensure_future(rest.create("lag", "inflight-b", processUid=pb)),
            ]
            await asyncio.sleep(0.2)
            a_before, b_before = a.latest().instance_id, b.latest().instance_id
            a.signal(signal.SIGSTOP)
            daemon.kill()
            assert [status for status, _ in await asyncio.gather(*inflight)] == [0, 0]
            await daemon.close()
            daemon = await Daemon.start(port, log, *args)
            restarted = time.monotonic()
            b_back = await b.wait_rejoin(0, after=b_before)

            # a is away: every explicit id waits, whichever it is; generated ids do not.
            refusals = 0
            for room_id in ("inflight-a", "inflight-b", "brand-new"):
                reply = await rest.request(
                    "POST", "/v1/rooms", json={"type": "match", "roomId": room_id}
                )
                assert (reply.status, reply.cause) == (503, "NOT_READY"), reply.body
                assert 1 <= int(reply.headers["Retry-After"]) <= 20
                refusals += 1
            status, body = await rest.call("POST", "/v1/rooms", {"type": "match"})
            assert status == 201, body
            assert body["data"]["instanceId"] == b_back.instance_id
            status, body = await rest.call("GET", "/readyz")
            assert status == 200

            a.signal(signal.SIGCONT)
            a_back = await a.wait_rejoin(0, after=a_before)

            async def settled() -> bool:
                status, _ = await rest.create("match", "brand-new")
                return status == 201

            await wait_for(settled, 5, step=0.05)
            settled_after_ms = (time.monotonic() - restarted) * 1000

            async def both_listed() -> bool:
                ids = {row["id"] for row in await rest.rooms()}
                return {"inflight-a", "inflight-b"} <= ids

            await wait_for(both_listed, 5, step=0.05)
            rooms = await rest.rooms()
            assert_no_duplicates(rooms)
            where = {row["id"]: row["instanceId"] for row in rooms}
            assert where["inflight-a"] == a_back.instance_id
            assert where["inflight-b"] == b_back.instance_id
            for room_id in ("inflight-a", "inflight-b", "a-fleet", "b-fleet"):
                status, body = await rest.create("match", room_id)
                assert (status, cause(body)) == (409, "ROOM_EXISTS"), room_id

            # SIGTERM: a clean shutdown writes every room id as an orphan hold.
            a_before, b_before = a_back.instance_id, b_back.instance_id
            daemon.proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(daemon.proc.wait(), 10) == 0
            assert "inflight-a" in state.read_text()
            daemon = await Daemon.start(port, log, *args)
            a_back, b_back = await asyncio.gather(
                a.wait_rejoin(0, after=a_before), b.wait_rejoin(0, after=b_before)
            )
            await wait_for(both_listed, 5, step=0.05)
            assert_no_duplicates(await rest.rooms())
            for room_id in ("inflight-a", "inflight-b", "a-fleet", "b-fleet", "brand-new"):
                status, body = await rest.create("match", room_id)
                assert (status, cause(body)) == (409, "ROOM_EXISTS"), room_id
            report(
                "daemon restart with --state",
                heartbeat_ms=HEARTBEAT_MS,
                refused_while_settling=refusals,
                settled_after_restart_ms=settled_after_ms,
            )
    finally:
        await daemon.close()
