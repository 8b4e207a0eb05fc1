"""Graceful shutdown on SIGTERM/SIGINT: drain, wait for empty rooms, leave, stop the host."""

from __future__ import annotations

import asyncio
import inspect
import signal
from collections.abc import Callable
from typing import Final, Protocol

from ._errors import describe
from ._host import RoomHost, SupportsShutdown
from ._log import logger
from ._status import LIVE, AgentStatus

__all__ = ["GracefulShutdown"]

_SIGNALS: Final = (signal.SIGTERM, signal.SIGINT)


class _Agent(Protocol):
    """The parts of :class:`~fleet_agent.FleetAgent` the shutdown sequence drives."""

    @property
    def status(self) -> AgentStatus: ...

    async def drain(self) -> None: ...

    async def await_empty(self, timeout_ms: float | None = None) -> None: ...

    async def disconnect(self) -> None: ...


class GracefulShutdown:
    """The signal handlers of one agent and the shutdown sequence they start.

    ``report_draining`` marks the agent draining without waiting for an echo (used when
    it is not connected, so the status goes out with the next connection).
    """

    def __init__(
        self, agent: _Agent, host: RoomHost, *, report_draining: Callable[[], None]
    ) -> None:
        self._agent = agent
        self._host = host
        self._report_draining = report_draining
        self._loop: asyncio.AbstractEventLoop | None = None
        self.task: asyncio.Task[None] | None = None
        """The sequence a signal started, while it runs."""

    def install(self, empty_timeout_ms: float | None) -> None:
        """Handle SIGTERM and SIGINT on the running loop, replacing earlier handlers."""
        if empty_timeout_ms is not None and not empty_timeout_ms > 0:
            raise ValueError("empty_timeout_ms must be a positive number or None")
        loop = asyncio.get_running_loop()
        self.remove()
        self._loop = loop
        try:
            for sig in _SIGNALS:
                loop.add_signal_handler(sig, self._on_signal, sig, empty_timeout_ms)
        except BaseException:
            self.remove()
            raise

    def remove(self) -> None:
        """Remove the handlers, if installed; safe to call twice."""
        loop, self._loop = self._loop, None
        if loop is None or loop.is_closed():
            return
        for sig in _SIGNALS:
            loop.remove_signal_handler(sig)

    def _on_signal(self, sig: int, empty_timeout_ms: float | None) -> None:
        loop = self._loop
        self.remove()
        if loop is None or self.task is not None:
            return
        logger.info("received %s: graceful shutdown", signal.Signals(sig).name)
        task = loop.create_task(self._run(empty_timeout_ms))
        self.task = task
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self.task = None
        if not task.cancelled() and (exc := task.exception()) is not None:
            logger.error("graceful shutdown failed", exc_info=exc)

    async def _run(self, empty_timeout_ms: float | None) -> None:
        agent = self._agent
        delay = None if empty_timeout_ms is None else empty_timeout_ms / 1000
        if agent.status in LIVE:
            try:
                async with asyncio.timeout(delay):
                    await agent.drain()
            except Exception as exc:
                logger.warning("graceful shutdown: drain not confirmed (%s)", describe(exc))
        else:
            self._report_draining()
        try:
            await agent.await_empty(empty_timeout_ms)
        except Exception as exc:
            logger.warning("graceful shutdown: %s", describe(exc))
        try:
            await agent.disconnect()
        except Exception:
            logger.exception("graceful shutdown: disconnect failed")
        await self._shutdown_host()
        logger.info("graceful shutdown complete")

    async def _shutdown_host(self) -> None:
        if isinstance(self._host, SupportsShutdown):
            try:
                result = self._host.shutdown()
                if inspect.isawaitable(result):
                    await result
            except Exception:
                logger.exception("graceful shutdown: host shutdown() failed")
