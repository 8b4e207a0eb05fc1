"""The reconnect wait: full jitter over a doubling window, capped, restarted at Hello."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

import pytest

from fleet_agent import Backoff, FleetAgent
from fleet_agent._backoff import reconnect_delay
from tests.support.waits import wait_for

from .fake_orchestrator import FakeOrchestrator

BACKOFF = Backoff(initial_ms=500, max_ms=30_000)


def top(attempt: int, backoff: Backoff = BACKOFF) -> float:
    """The delay at the top of the window (``rand`` just below 1 is the same up to ε)."""
    return reconnect_delay(attempt, backoff, lambda: 1.0)


def test_the_delay_is_the_window_scaled_by_the_draw() -> None:
    assert reconnect_delay(1, BACKOFF, lambda: 0.0) == 0.0
    assert reconnect_delay(1, BACKOFF, lambda: 0.5) == pytest.approx(0.25)
    assert reconnect_delay(3, BACKOFF, lambda: 0.25) == pytest.approx(0.5)


def test_random_delays_stay_within_the_window() -> None:
    rng = random.Random(7)
    for attempt in range(1, 30):
        window = min(30.0, 0.5 * 2 ** (attempt - 1))
        for _ in range(50):
            delay = reconnect_delay(attempt, BACKOFF, rng.random)
            assert 0.0 <= delay <= window


def test_the_default_draw_is_random() -> None:
    delays = {reconnect_delay(4, BACKOFF) for _ in range(20)}
    assert len(delays) > 1
    assert all(0.0 <= d <= 4.0 for d in delays)


def test_the_window_doubles_from_initial_ms() -> None:
    assert [top(n) for n in range(1, 7)] == pytest.approx([0.5, 1.0, 2.0, 4.0, 8.0, 16.0])


def test_the_window_is_capped_at_max_ms() -> None:
    assert top(7) == pytest.approx(30.0)
    assert top(8) == pytest.approx(30.0)
    assert top(10_000) == pytest.approx(30.0)
    assert top(3, Backoff(initial_ms=250, max_ms=250)) == pytest.approx(0.25)
    assert top(4, Backoff(initial_ms=10, max_ms=50)) == pytest.approx(0.05)


def test_a_restarted_count_gets_the_first_window_again() -> None:
    before = [top(n) for n in range(1, 5)]
    after = [top(n) for n in range(1, 5)]
    assert before == after
    assert top(1) == pytest.approx(0.5)
    assert top(4) == pytest.approx(4.0)


def test_attempts_count_from_one() -> None:
    with pytest.raises(ValueError, match="from 1"):
        reconnect_delay(0, BACKOFF)


async def test_the_agent_counts_failures_in_a_row_and_restarts_at_hello(
    make_agent: Callable[..., FleetAgent],
    fake: FakeOrchestrator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    attempts: list[int] = []

    def recording(attempt: int, backoff: Backoff) -> float:
        attempts.append(attempt)
        return reconnect_delay(attempt, backoff)

    monkeypatch.setattr("fleet_agent._supervisor.reconnect_delay", recording)
    fake.refuse = [503, 503]
    agent = make_agent()
    connecting = asyncio.create_task(agent.connect())
    link = await fake.next_link()
    await link.hello("i_1")
    await asyncio.wait_for(connecting, 5)
    assert attempts == [1, 2]

    fake.refuse = [503]
    await link.close()
    again = await fake.next_link()
    assert attempts == [1, 2, 1, 2]
    await again.close()
    third = await fake.next_link()
    assert attempts == [1, 2, 1, 2, 3]
    await third.hello("i_2")
    await wait_for(lambda: agent.instance_id == "i_2")
    await third.close()
    await fake.next_link()
    assert attempts == [1, 2, 1, 2, 3, 1]
