"""The daemon's garbage-collector tuning freezes long-lived objects and reclaims closed links."""

from __future__ import annotations

import asyncio
import gc

from aiohttp import web

from fleet_server._collector import YOUNG_THRESHOLD, CollectorTuning
from tests.support.orchestrators import agent_url, running_orchestrator
from tests.support.raw_agent import RawAgent
from tests.support.waits import wait_for


def _websocket_responses() -> int:
    return sum(1 for o in gc.get_objects() if isinstance(o, web.WebSocketResponse))


async def test_start_freezes_periodically_and_stop_restores_the_collector() -> None:
    before = gc.get_threshold()
    tuning = CollectorTuning(lambda: 0, lambda: 0, freeze_every_s=0.02)
    tuning.start()
    try:
        assert gc.get_threshold()[0] == YOUNG_THRESHOLD
        await wait_for(lambda: gc.get_freeze_count() > 0, 5.0)
    finally:
        await tuning.stop()
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


def test_reclaim_waits_for_enough_closed_connections_and_the_gap() -> None:
    closed = [0]
    tuning = CollectorTuning(lambda: closed[0], lambda: 2000, min_reclaim_gap_s=60.0)
    tuning._reclaimed_at = 1000.0
    closed[0] = 99
    assert not tuning.reclaim_due(2000.0)  # fewer than a twentieth of 2,000 open
    closed[0] = 100
    assert tuning.reclaim_due(2000.0)
    assert not tuning.reclaim_due(1030.0)  # within the minimum gap
    closed[0] = 1
    assert tuning.reclaim_due(1000.0 + 3600.0)  # hourly once any closed
    closed[0] = 0
    assert not tuning.reclaim_due(1000.0 + 7200.0)


async def test_closed_agent_connections_are_reclaimed_after_freezing() -> None:
    async with running_orchestrator(heartbeat_ms=100) as orch:
        transport = orch.transport
        tuning = CollectorTuning(
            lambda: transport.closed_links,
            lambda: len(transport.links),
            freeze_every_s=0.05,
            min_reclaim_gap_s=0.0,
        )
        gc.collect()
        baseline = _websocket_responses()
        tuning.start()
        try:
            for _ in range(2):
                agents = [RawAgent(agent_url(orch.port)) for _ in range(40)]
                await asyncio.gather(*(agent.connect() for agent in agents))
                await wait_for(lambda: len(transport.links) == 40, 10.0)
                await asyncio.sleep(0.2)  # frozen while open
                await asyncio.gather(*(agent.close() for agent in agents))
                await wait_for(lambda: not transport.links, 10.0)
            assert transport.closed_links == 80
            await wait_for(lambda: tuning.reclaims > 0, 10.0)
            await asyncio.sleep(0.2)
            assert tuning.reclaims >= 1
            tuning.reclaim()
            assert _websocket_responses() <= baseline
        finally:
            await tuning.stop()
