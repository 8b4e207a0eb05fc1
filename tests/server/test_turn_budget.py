"""The links' share of a loop turn (no connection needed; the clock is a fake)."""

from __future__ import annotations

import asyncio

from fleet_server._turns import GRANT, TurnBudget


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def _turns(count: int) -> None:
    for _ in range(count):
        await asyncio.sleep(0)


async def test_a_quiet_loop_never_waits() -> None:
    clock = _Clock()
    turns = TurnBudget(0.01, clock)
    for _ in range(5):
        assert not turns.spent()  # the first piece of work of each turn
        clock.now += 1.0  # a long piece of work
        await _turns(2)  # the turn marker ran: a new turn
    assert turns.deferred == 0


async def test_work_past_the_budget_waits_for_later_turns_and_timers_run_between() -> None:
    """Links woken in one turn, each with 3 ms of work: four fit in a 10 ms turn, the
    rest wait in line and go GRANT per later turn, each once, in the order they came;
    a timer due meanwhile fires before the last of them runs."""
    clock = _Clock()
    turns = TurnBudget(0.01, clock)
    done: list[int] = []
    fired_after: list[int] = []

    async def link(n: int) -> None:
        if turns.spent():
            await turns.wait()
        clock.now += 0.003
        done.append(n)

    count = 4 + 2 * GRANT
    loop = asyncio.get_running_loop()
    loop.call_later(0, lambda: fired_after.append(len(done)))
    await asyncio.gather(*(link(n) for n in range(count)))
    assert done == list(range(count))
    assert turns.deferred == count - 4  # one wait each, however long the line
    assert fired_after == [4]


async def test_a_waiter_whose_link_closed_does_not_hold_up_the_line() -> None:
    clock = _Clock()
    turns = TurnBudget(0.01, clock)
    assert not turns.spent()
    clock.now += 1.0  # the budget is gone
    assert turns.spent()
    gone = asyncio.ensure_future(turns.wait())
    assert turns.spent()  # others wait: in line behind them
    after = asyncio.ensure_future(turns.wait())
    await asyncio.sleep(0)
    gone.cancel()
    await asyncio.wait_for(after, 1.0)
    assert gone.cancelled()
