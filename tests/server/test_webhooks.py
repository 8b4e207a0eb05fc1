"""Webhooks against a real aiohttp receiver (CONTRACT §14, docs/integrations.md §2):
order, signatures, unique ids, retries, drop-oldest overflow, a hanging receiver that
never slows placement, and configuration errors that name the key."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from fleet_server import Orchestrator, Webhook
from fleet_server._config import ConfigError, build_parser, load_config
from fleet_server._webhooks import WebhookSender
from tests.support.agents import RawAgents
from tests.support.orchestrators import running_orchestrator
from tests.support.waits import wait_for

SECRET = "webhook-secret-0123456789"


@dataclass
class Receiver:
    """A real HTTP receiver that records every request and answers as told."""

    statuses: list[int] = field(default_factory=list)  # answers to give, then 200
    hang: bool = False
    seen: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.seen.append((dict(request.headers), body))
        if self.hang:
            await asyncio.sleep(3600)
        status = self.statuses.pop(0) if self.statuses else 200
        return web.Response(status=status)

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(body) for _, body in self.seen]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    found = Receiver()
    app = web.Application()
    app.router.add_post("/hook", found.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    found.url = f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
    yield found
    await runner.cleanup()


def _verify(headers: dict[str, str], body: bytes) -> bool:
    parts = dict(item.split("=", 1) for item in headers["Fleet-Signature"].split(","))
    expected = hmac.new(SECRET.encode(), f"{parts['t']}.".encode() + body, hashlib.sha256)
    fresh = abs(int(parts["t"]) - time.time()) < 300
    return fresh and hmac.compare_digest(parts["v1"], expected.hexdigest())


async def test_events_arrive_signed_in_order_with_unique_ids(receiver: Receiver) -> None:
    hook = Webhook(receiver.url, ["instance:join", "room:create", "room:destroy"], SECRET)
    async with running_orchestrator(webhooks=[hook]) as orch, RawAgents(orch) as agents:
        agent = await agents.join()
        for n in range(5):
            await orch.fleet.create_room("match", room_id=f"m{n}")
        await orch.fleet.destroy_room("m0")
        await wait_for(lambda: len(receiver.seen) == 7, 5)
        seen = list(receiver.seen)
    events = [json.loads(body) for _, body in seen]
    assert [e["type"] for e in events] == ["instance:join", *["room:create"] * 5, "room:destroy"]
    assert [e["data"]["id"] for e in events[1:]] == ["m0", "m1", "m2", "m3", "m4", "m0"]
    assert events[0]["data"]["id"] == agent.instance_id
    ids = [e["id"] for e in events]
    assert len(set(ids)) == 7 and all(i.startswith("evt_") for i in ids)
    for (headers, body), event in zip(seen, events, strict=True):
        assert headers["Fleet-Event-Id"] == event["id"]
        assert headers["Content-Type"] == "application/json"
        assert _verify(headers, body)
    assert all(abs(e["time"] - time.time() * 1000) < 60_000 for e in events)


async def test_failed_deliveries_are_retried_and_later_events_wait(receiver: Receiver) -> None:
    receiver.statuses = [500, 502, 503]
    hook = Webhook(receiver.url, ["room:create"], SECRET)
    async with running_orchestrator(webhooks=[hook]) as orch, RawAgents(orch) as agents:
        await agents.join()
        await orch.fleet.create_room("match", room_id="first")
        await orch.fleet.create_room("match", room_id="second")
        await wait_for(lambda: len(receiver.seen) == 5, 20)
    events = receiver.events()
    assert [e["data"]["id"] for e in events] == ["first"] * 4 + ["second"]
    assert len({e["id"] for e in events[:4]}) == 1  # the same event, retried
    assert all(_verify(headers, body) for headers, body in receiver.seen)


async def test_a_full_queue_drops_the_oldest_and_counts_it(receiver: Receiver) -> None:
    receiver.hang = True
    hook = Webhook(receiver.url, ["room:create"], SECRET)
    async with running_orchestrator() as orch, RawAgents(orch) as agents:
        import aiohttp

        async with aiohttp.ClientSession() as session:
            sender = WebhookSender(hook, orch._hub, session, queue_size=3)
            await agents.join()
            for n in range(6):
                await orch.fleet.create_room("match", room_id=f"q{n}")
            await wait_for(lambda: len(receiver.seen) == 1, 5)  # q0 in flight, hanging
            queued = [item[3].id for item in sender._queue]
            assert queued == ["q3", "q4", "q5"]  # q0 is in flight; q1 and q2 dropped
            assert orch._hub.dropped["webhook"] == 2
            await sender.close()


async def test_a_hanging_receiver_never_slows_placement(receiver: Receiver) -> None:
    receiver.hang = True
    hook = Webhook(receiver.url, ["room:create", "sync"], SECRET)
    async with running_orchestrator(webhooks=[hook]) as orch, RawAgents(orch) as agents:
        await agents.join()
        started = time.perf_counter()
        for n in range(200):
            await orch.fleet.create_room("match", room_id=f"h{n}")
        elapsed = time.perf_counter() - started
        assert len(receiver.seen) == 1  # the first event hangs; the rest wait their turn
        assert elapsed < 10, elapsed  # generous: placement does not wait on the receiver


@pytest.mark.parametrize(
    ("hook", "message"),
    [
        ({"url": "ftp://x/hook", "events": ["sync"], "secret": SECRET}, "webhooks[0].url"),
        ({"url": "http://x/hook", "events": [], "secret": SECRET}, "webhooks[0].events"),
        (
            {"url": "http://x/hook", "events": ["room:rename"], "secret": SECRET},
            "webhooks[0].events",
        ),
        ({"url": "http://x/hook", "events": ["sync"], "secret": ""}, "webhooks[0].secret"),
        ({"url": "http://x/hook", "events": ["sync"], "secret": "a b"}, "webhooks[0].secret"),
        ({"url": "http://x/hook", "events": ["sync"], "secret": SECRET, "extra": 1}, "webhooks[0]"),
    ],
)
def test_bad_webhook_config_is_one_error_naming_the_key(
    tmp_path: Any, hook: dict[str, Any], message: str
) -> None:
    config = tmp_path / "fleet.yaml"
    config.write_text(json.dumps({"webhooks": [hook]}))
    args = build_parser("test").parse_args(["--config", str(config)])
    with pytest.raises(ConfigError) as info:
        load_config(args, {})
    assert message in str(info.value) and SECRET not in str(info.value)
    with pytest.raises(ValueError):
        Orchestrator(agent_key="k" * 20, admin_key="a" * 20, webhooks=[hook])


def test_a_short_secret_is_taken_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "fleet")
    hook = Webhook("http://hooks.example/in", ["sync"], "s3cret")
    assert hook.secret == "s3cret"
    assert "secret shorter than 16" in caplog.text and "hooks.example" in caplog.text
    assert "s3cret" not in caplog.text


def test_a_webhook_never_shows_its_secret() -> None:
    assert SECRET not in repr(Webhook("http://x/hook", ["sync"], SECRET))
