"""Creates per second with and without a webhook whose receiver hangs (CONTRACT §14).

    python -m tools.webhook_bench [--creates 2000] [--rounds 3]

One embedded orchestrator, one in-process agent that acks at once, creates issued
back to back from one client; the same run with a webhook on every event whose receiver
never answers. Prints creates/s for each round and the ratio of the medians: a hanging
receiver must not slow placement (the events only queue).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Sequence

from aiohttp import web

from fleet_server import Orchestrator, Webhook
from fleet_server._events import EVENT_TYPES
from tests.support.keys import ADMIN, KEY
from tests.support.raw_agent import RawAgent


async def _hanging_receiver() -> tuple[web.AppRunner, str]:
    async def hang(request: web.Request) -> web.Response:
        await asyncio.sleep(3600)
        return web.Response()

    app = web.Application()
    app.router.add_post("/hook", hang)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}/hook"


async def _round(creates: int, hook_url: str | None) -> float:
    webhooks = [Webhook(hook_url, list(EVENT_TYPES), "bench-secret-0123456789")] if hook_url else []
    orch = Orchestrator(
        "127.0.0.1", 0, agent_key=KEY, admin_key=ADMIN, api=False, webhooks=webhooks
    )
    await orch.listen()
    agent = RawAgent(f"ws://127.0.0.1:{orch.port}/")
    try:
        await agent.connect()
        while orch.fleet.get_instance(agent.instance_id) is None:
            await asyncio.sleep(0.01)
        started = time.perf_counter()
        for n in range(creates):
            await orch.fleet.create_room("match", room_id=f"b{n}")
        return creates / (time.perf_counter() - started)
    finally:
        await agent.close()
        await orch.shutdown()


async def _main(creates: int, rounds: int) -> None:
    runner, url = await _hanging_receiver()
    try:
        plain: list[float] = []
        hooked: list[float] = []
        for _ in range(rounds):
            plain.append(await _round(creates, None))
            hooked.append(await _round(creates, url))
    finally:
        await runner.cleanup()
    print("creates/s without a webhook:      ", " ".join(f"{r:,.0f}" for r in plain))
    print("creates/s, receiver hanging:      ", " ".join(f"{r:,.0f}" for r in hooked))
    ratio = statistics.median(hooked) / statistics.median(plain)
    print(f"ratio of medians (hooked / plain): {ratio:.2f}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.webhook_bench")
    parser.add_argument("--creates", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    asyncio.run(_main(args.creates, args.rounds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
