"""The connection supervisor: keeps the agent joined until it gives up.

It establishes a connection (dial, then Hello), serves it until it ends, and
establishes again. Each round is a *pass* over the orchestrator URLs
(:class:`~fleet_agent._failover.DialPlan`): a failed dial moves on to the next URL at
once, a standby's leader hint is dialled next, and only a pass that ends without a
Hello waits :func:`~fleet_agent._backoff.reconnect_delay`, which grows with each such
pass in a row; the count restarts at every Hello. After a drop the next pass starts at
the URL that was in use, after that wait; when the orchestrator stopped leading (close
4010) or stopped polling, it starts at the next URL at once. Once a Hello has given the
heartbeat, a handshake that gets no answer for three heartbeats fails like a refused one
(:func:`~fleet_agent._connection.handshake_timeout_s`): a frozen node whose kernel still
accepts connections holds a pass up no longer than a silent one holds a connection. It
gives up on a ``connect_timeout_ms`` expiry, a protocol mismatch or an unexpected error
and returns why; cancellation (``disconnect()``) propagates.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import NoReturn

from rivalis.fleet.v3 import agent_pb2

from ._backoff import reconnect_delay
from ._config import AgentConfig
from ._connection import (
    GOING_AWAY,
    LEAVE,
    NO_POLL,
    NOT_LEADER,
    AttemptFailed,
    Ended,
    HandleFrame,
    close,
    establish,
    handshake_timeout_s,
    serve,
)
from ._errors import AgentTimeoutError, FleetAgentError, ProtocolMismatchError, describe
from ._failover import DialPlan
from ._log import logger
from ._ws import Socket

__all__ = ["Supervisor"]

Joined = tuple[Socket, agent_pb2.Hello]


class Supervisor:
    """Runs the connections of one agent; ``on_hello`` and ``on_lost`` bracket each one.

    ``polls`` counts the polls the agent has handled (see :func:`serve`).
    """

    def __init__(
        self,
        config: AgentConfig,
        *,
        on_hello: Callable[[agent_pb2.Hello], None],
        on_lost: Callable[[str], None],
        handle: HandleFrame,
        polls: Callable[[], int],
    ) -> None:
        self._config = config
        self._on_hello = on_hello
        self._on_lost = on_lost
        self._handle = handle
        self._polls = polls
        self._plan = DialPlan(config.urls)
        self._heartbeat_ms: int | None = None  # from the last Hello

    @property
    def url(self) -> str:
        """The URL being dialled or in use (the last one, between connections)."""
        return self._plan.current

    async def run(self) -> FleetAgentError:
        """Stay joined, redialling after every drop; returns the error that ended it."""
        config = self._config
        timeout_ms = config.connect_timeout_ms
        timeout_s = None if timeout_ms is None else timeout_ms / 1000
        logger.info("connecting url=%s name=%s", ",".join(config.urls), config.name)
        try:
            async with asyncio.timeout(timeout_s) as deadline:
                await self._redial(deadline)
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

    async def _redial(self, deadline: asyncio.Timeout) -> NoReturn:
        attempt = 1
        first: str | None = None
        while True:
            joined = await self._dial_pass(first)
            if isinstance(joined, AttemptFailed):
                await self._back_off(str(joined), attempt)
                attempt += 1
                first = None
                continue
            attempt = 1  # the backoff restarts at every Hello
            url = self._plan.current
            ended = await self._session(*joined, deadline)
            failure = f"connection lost url={url} instance={joined[1].instance_id}: {ended.cause}"
            if ended.no_poll or ended.close_code == NOT_LEADER:
                first = self._plan.after(url)
                logger.warning("%s; trying url=%s at once", failure, first)
                continue
            first = url
            await self._back_off(failure, attempt)
            attempt += 1

    async def _dial_pass(self, first: str | None) -> Joined | AttemptFailed:
        """Dial the URLs of one pass until a Hello; the last failure when none answers."""
        plan = self._plan
        plan.begin(first)
        failure = AttemptFailed("no URL to dial")
        url = plan.next()
        while url is not None:
            try:
                timeout_s = handshake_timeout_s(self._heartbeat_ms)
                return await establish(self._config, url, timeout_s)
            except AttemptFailed as exc:
                failure = exc
            if failure.leader is not None and plan.follow(failure.leader):
                url = plan.next()
                logger.info("%s; trying the leader url=%s", failure, url)
                continue
            if failure.leader is not None:
                logger.info(
                    "ignored the leader hint of url=%s: a pass follows one hint, "
                    "to a URL it has not dialled",
                    url,
                )
            url = plan.next()
            if url is not None:
                logger.warning("%s; trying url=%s", failure, url)
        return failure

    async def _back_off(self, failure: str, attempt: int) -> None:
        wait_s = reconnect_delay(attempt, self._config.backoff)
        logger.warning("%s; retrying in %d ms", failure, round(wait_s * 1000))
        await asyncio.sleep(wait_s)

    async def _session(
        self,
        sock: Socket,
        hello: agent_pb2.Hello,
        deadline: asyncio.Timeout,
    ) -> Ended:
        """Serve one joined connection until it ends; closes it with 1000 only when
        cancelled (``disconnect()``), else with 4012 after no polls, else 1001."""
        code, reason = GOING_AWAY, ""
        try:
            deadline.reschedule(None)
            self._heartbeat_ms = hello.heartbeat_ms
            self._on_hello(hello)
            ended = await serve(
                sock, self._handle, heartbeat_ms=hello.heartbeat_ms, polls=self._polls
            )
            if ended.no_poll:
                code, reason = NO_POLL, "no poll"
            self._on_lost(ended.cause)
        except asyncio.CancelledError:
            code = LEAVE
            raise
        finally:
            await close(sock, code, reason)
        return ended
