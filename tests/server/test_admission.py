"""Admission of agents while many join at once (docs/high-availability.md §4): at most
``MAX_JOINING`` upgraded agents whose first State is not handled yet; the next upgrade is
refused with 503 ``NOT_READY`` and ``Retry-After``, before any WebSocket work."""

from __future__ import annotations

import aiohttp

from fleet_agent import wire
from fleet_server._transport import JOINING_RETRY_AFTER_S, MAX_JOINING
from tests.support.keys import KEY
from tests.support.waits import wait_for

from .harness import harness


async def _refusal(url: str) -> tuple[int, str | None, bytes]:
    """Status, ``Retry-After`` and body of an agent upgrade that was not accepted."""
    headers = {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Protocol": f"{wire.SUBPROTOCOL}, {KEY}",
    }
    async with (
        aiohttp.ClientSession() as session,
        session.get(url.replace("ws://", "http://"), headers=headers) as response,
    ):
        return response.status, response.headers.get("Retry-After"), await response.read()


async def test_the_default_limit_and_its_retry_after() -> None:
    async with harness() as h:
        assert h.orch.transport.max_joining == MAX_JOINING == 512
        assert JOINING_RETRY_AFTER_S == 1


async def test_past_the_joining_limit_an_upgrade_is_refused_until_one_has_joined() -> None:
    async with harness(heartbeat_ms=1000) as h:
        transport = h.orch.transport
        transport.max_joining = 2
        slow = [h.agent(auto_reply=False, name=f"slow-{n}") for n in range(2)]
        for agent in slow:  # Hello and the first poll, which they do not answer yet
            await agent.connect()
        assert transport.joining == 2

        status, retry_after, body = await _refusal(h.url)
        assert (status, retry_after) == (503, str(JOINING_RETRY_AFTER_S))
        assert body == b'{"status":"rejected","cause":"NOT_READY"}'
        assert transport.refused_joining == 1

        await slow[0].reply(await slow[0].next_poll(0), full=True)  # it joins
        await wait_for(lambda: transport.joining == 1)
        await h.join(name="next")  # a slot is free: the next one is admitted and joins
        assert transport.joining == 1
        assert h.orch.fleet.stats.instances == 2


async def test_a_joining_agent_that_leaves_before_its_first_state_frees_its_slot() -> None:
    async with harness(heartbeat_ms=1000) as h:
        transport = h.orch.transport
        transport.max_joining = 1
        agent = h.agent(auto_reply=False)
        await agent.connect()
        assert transport.joining == 1
        await agent.close()
        await wait_for(lambda: transport.joining == 0)
        await h.join(name="after")
        assert transport.refused_joining == 0
