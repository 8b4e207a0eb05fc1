"""The links' share of a loop turn (no connection needed; the clock is a fake)."""

from __future__ import annotations

import asyncio

from fleet_server._turns import TurnBudget


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_a_quiet_loop_never_waits() -> None:
    clock = _Clock()
    turns = TurnBudget(0.01, clock)
    for _ in range(5):
        assert not turns.spent()  # the first piece of work of each turn
        clock.now += 1.0  # a long piece of work
        await asyncio.sleep(0)
        await asyncio.sleep(0)  # the turn marker ran: a new turn
    assert turns.deferred == 0


async def test_work_past_the_budget_waits_for_later_turns_and_timers_run_between() -> None:
    """Twenty links woken in one turn, each with 3 ms of work: about four fit in a
    10 ms turn, the rest wait, and a timer due meanwhile fires before the last of
    them runs; each link's work runs once, in the order they were woken."""
    clock = _Clock()
    turns = TurnBudget(0.01, clock)
    done: list[int] = []
    fired_after: list[int] = []

    async def link(n: int) -> None:
        while turns.spent():
            await turns.next_turn()
        clock.now += 0.003
        done.append(n)

    loop = asyncio.get_running_loop()
    loop.call_later(0, lambda: fired_after.append(len(done)))
    await asyncio.gather(*(link(n) for n in range(20)))
    assert done == list(range(20))
    assert turns.deferred > 0
    assert fired_after and fired_after[0] < 20
