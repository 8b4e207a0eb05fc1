"""Polling until a condition holds, with a deadline."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any


async def wait_for(
    predicate: Callable[[], Any],
    timeout: float = 5.0,
    step: float = 0.005,
    *,
    message: str | Callable[[], str] | None = None,
) -> Any:
    """Call ``predicate`` every ``step`` seconds (awaiting what it returns, if awaitable)
    until the value is truthy, and return that value; fail after ``timeout`` seconds with
    ``message`` (a string, or a callable asked for one at that moment)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if loop.time() > deadline:
            if callable(message):
                message = message()
            raise AssertionError(message or f"condition not met within {timeout} s")
        await asyncio.sleep(step)


async def settle(turns: int = 5) -> None:
    """Let the loop run ``turns`` iterations: a server stopped just after it accepted a
    connection still has that connection's setup callbacks queued, and closing the loop
    before they run leaves a socket nobody closes (a ResourceWarning in a later test)."""
    for _ in range(turns):
        await asyncio.sleep(0)
