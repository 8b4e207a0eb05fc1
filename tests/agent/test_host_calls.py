"""A host call started in the callback that read its command and, when it waits, carried
on in a task (``fleet_agent._connection._Resumed``): results, errors and cancellation
reach it as if a task had run it from the start."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from fleet_agent._connection import _Resumed


def started(coro: Any) -> _Resumed:
    waiting_on = coro.send(None)
    return _Resumed(coro, waiting_on)


async def test_a_resumed_call_gets_what_it_waited_for_and_returns() -> None:
    gate: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def call() -> bytes:
        value = await gate
        await asyncio.sleep(0)  # a bare yield
        value += await asyncio.sleep(0.01, result=1)
        return str(value).encode()

    task = asyncio.create_task(_await(started(call())))
    await asyncio.sleep(0.01)
    assert not task.done()
    gate.set_result(41)
    assert await asyncio.wait_for(task, 5) == b"42"


async def test_a_resumed_call_sees_the_error_of_what_it_waited_for() -> None:
    gate: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    seen: list[str] = []

    async def call() -> bytes:
        try:
            await gate
        except KeyError:
            seen.append("caught")
            return b"handled"
        return b"not reached"

    task = asyncio.create_task(_await(started(call())))
    await asyncio.sleep(0)
    gate.set_exception(KeyError("x"))
    assert await asyncio.wait_for(task, 5) == b"handled" and seen == ["caught"]


async def test_cancelling_the_task_cancels_the_resumed_call() -> None:
    cleaned: list[str] = []

    async def call() -> bytes:
        try:
            await asyncio.sleep(30)
        finally:
            cleaned.append("finally")
        return b""

    task = asyncio.create_task(_await(started(call())))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cleaned == ["finally"]


async def _await(resumed: _Resumed) -> Any:
    return await resumed
