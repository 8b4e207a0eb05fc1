"""The links' share of a loop turn (a fake clock; and one orchestrator, for the acks)."""

from __future__ import annotations

import asyncio

from fleet_server._turns import GRANT, TurnBudget

from .harness import harness


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


class _Shut(TurnBudget):
    """A budget always spent, whose line never moves."""

    def spent(self) -> bool:
        return True

    async def wait(self) -> None:
        await asyncio.Event().wait()


async def test_an_ack_never_waits_in_line_so_a_create_completes_while_polls_wait() -> None:
    async with harness(command_timeout_ms=3000) as h:
        h.orch.transport.turns = _Shut()  # the links accepted from now on share it
        agent = await h.join()  # a joining link is not held back
        room = await h.orch.fleet.create_room("match")  # its Ack skips the line
        assert room.instance_id == agent.instance_id
        assert h.orch.fleet.get_room(room.id) is not None
