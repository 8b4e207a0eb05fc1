"""The example receiver verifies what the orchestrator signs, and refuses anything else."""

from __future__ import annotations

import contextlib
import io
import time
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from examples.webhook_receiver import make_app, verify
from fleet_server import Webhook
from fleet_server._webhooks import signature
from tests.support.agents import RawAgents
from tests.support.orchestrators import running_orchestrator
from tests.support.waits import wait_for

SECRET = "receiver-secret-0123456789"


def test_verify_accepts_our_signature_and_refuses_tampering_and_replays() -> None:
    body = b'{"id":"evt_1"}'
    now = int(time.time())
    header = signature(SECRET, now, body)
    assert verify(SECRET, header, body)
    assert not verify(SECRET, header, body + b" ")
    assert not verify("other-secret-0123456789", header, body)
    assert not verify(SECRET, signature(SECRET, now - 301, body), body)
    assert not verify(SECRET, "garbage", body)


@contextlib.asynccontextmanager
async def served(app: web.Application) -> AsyncIterator[str]:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/fleet"
    finally:
        await runner.cleanup()


async def test_the_receiver_prints_the_events_an_orchestrator_sends(
    capsys: object,
) -> None:
    async with served(make_app(SECRET)) as url:
        hook = Webhook(url, ["room:create"], SECRET)
        async with running_orchestrator(webhooks=[hook]) as orch, RawAgents(orch) as agents:
            await agents.join()
            await orch.fleet.create_room("match", room_id="hello")
            out = io.StringIO()

            def printed() -> bool:
                captured = capsys.readouterr()  # type: ignore[attr-defined]
                out.write(captured.out)
                return '"hello"' in out.getvalue()

            await wait_for(printed, 5)
        async with aiohttp.ClientSession() as session:
            forged = await session.post(url, data=b"{}", headers={"Fleet-Signature": "t=1,v1=00"})
            assert forged.status == 401
