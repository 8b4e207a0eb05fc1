"""The connection supervisor: keeps the agent joined until it gives up.

It establishes a connection (dial, then Hello), serves it until it ends, and
establishes again, waiting :func:`~fleet_agent._backoff.reconnect_delay` between
attempts: the wait grows with each failure in a row and the count restarts at every
Hello. It gives up on a ``connect_timeout_ms`` expiry, a protocol mismatch or an
unexpected error and returns why; cancellation (``disconnect()``) propagates.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import NoReturn

import aiohttp
from rivalis.fleet.v3 import agent_pb2

from ._backoff import reconnect_delay
from ._config import AgentConfig
from ._connection import AttemptFailed, HandleFrame, establish, serve
from ._errors import AgentTimeoutError, FleetAgentError, ProtocolMismatchError, describe
from ._log import logger

__all__ = ["Supervisor"]


class Supervisor:
    """Runs the connections of one agent; ``on_hello`` and ``on_lost`` bracket each one."""

    def __init__(
        self,
        config: AgentConfig,
        *,
        on_hello: Callable[[agent_pb2.Hello], None],
        on_lost: Callable[[str], None],
        handle: HandleFrame,
    ) -> None:
        self._config = config
        self._on_hello = on_hello
        self._on_lost = on_lost
        self._handle = handle

    async def run(self) -> FleetAgentError:
        """Stay joined, redialling after every drop; returns the error that ended it."""
        config = self._config
        timeout_ms = config.connect_timeout_ms
        timeout_s = None if timeout_ms is None else timeout_ms / 1000
        logger.info("connecting url=%s name=%s", config.url, config.name)
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None)) as http,
                asyncio.timeout(timeout_s) as deadline,
            ):
                await self._redial(http, deadline)
        except TimeoutError as exc:
            if timeout_ms is None:
                logger.exception("agent connection loop failed")
                return FleetAgentError(f"agent connection loop failed: {describe(exc)}")
            outcome = AgentTimeoutError(f"no Hello within connect_timeout_ms={timeout_ms:g}")
            logger.warning("giving up: %s", outcome)
            return outcome
        except ProtocolMismatchError as exc:
            return exc
        except Exception as exc:
            logger.exception("agent connection loop failed")
            return FleetAgentError(f"agent connection loop failed: {describe(exc)}")

    async def _redial(self, http: aiohttp.ClientSession, deadline: asyncio.Timeout) -> NoReturn:
        attempt = 1
        while True:
            try:
                ws, hello = await establish(http, self._config)
            except AttemptFailed as exc:
                failure = exc
            else:
                attempt = 1  # the backoff restarts at every Hello
                failure = await self._session(ws, hello, deadline)
            wait_s = reconnect_delay(attempt, self._config.backoff)
            logger.warning("%s; retrying in %d ms", failure, round(wait_s * 1000))
            await asyncio.sleep(wait_s)
            attempt += 1

    async def _session(
        self,
        ws: aiohttp.ClientWebSocketResponse,
        hello: agent_pb2.Hello,
        deadline: asyncio.Timeout,
    ) -> AttemptFailed:
        """Serve one joined connection until it ends; returns the failure to report."""
        try:
            deadline.reschedule(None)
            self._on_hello(hello)
            cause = await serve(ws, self._handle)
            self._on_lost(cause)
        finally:
            await ws.close(code=aiohttp.WSCloseCode.OK)
        return AttemptFailed(f"connection lost instance={hello.instance_id}: {cause}")
