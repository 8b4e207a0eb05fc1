"""The HTTP server's listening sockets, accepting every waiting connection per loop turn.

uvloop (libuv 1.45 and later) accepts *one* connection per event-loop iteration. While
the loop is saturated — a whole fleet rejoining a new leader, each iteration running
thousands of polls, replies and handshakes — an iteration lasts hundreds of
milliseconds, so a leader holding 9,000 agents accepted about three connections a
second (``strace``: one ``accept4`` per iteration, never an ``EAGAIN``); its listen
backlog stayed full, the kernel dropped the other agents' SYNs, they retried after 1, 3
and 7 s, and the fleet never came back whole. asyncio's own loop accepts up to the
backlog per readiness; :class:`AcceptingSite` does the same on any loop: it binds and
listens as ``loop.create_server`` does, watches each socket with ``add_reader``,
accepts until the backlog is empty (at most ``backlog`` at a time) and hands each
connection to the loop with ``connect_accepted_socket``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
from collections.abc import Callable
from typing import Final

from aiohttp import web

__all__ = ["AcceptingSite"]

log = logging.getLogger("fleet.http")

_RESOURCE_ERRORS: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
_ACCEPT_RETRY_S: Final = 1.0  # after running out of descriptors, as asyncio waits


class AcceptingSite(web.BaseSite):
    """``web.TCPSite`` (host, port, ``backlog``, ``reuse_address``) with batch accepts."""

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str | None,
        port: int,
        *,
        backlog: int = 128,
        reuse_address: bool = True,
    ) -> None:
        super().__init__(runner, backlog=backlog)
        self._host = host
        self._port = port
        self._reuse_address = reuse_address

    @property
    def name(self) -> str:
        return f"http://{self._host or '0.0.0.0'}:{self._port}"

    async def start(self) -> None:
        await super().start()  # registers the site with its runner
        loop = asyncio.get_running_loop()
        server = self._runner.server
        assert server is not None
        sockets = await _bind(loop, self._host, self._port, self._backlog, self._reuse_address)
        self._server = _Listener(loop, sockets, server, self._backlog)


async def _bind(
    loop: asyncio.AbstractEventLoop, host: str | None, port: int, backlog: int, reuse: bool
) -> list[socket.socket]:
    """Listening, non-blocking sockets for every address of ``host`` (all when empty),
    as ``loop.create_server`` makes them (IPv6 sockets IPv6-only)."""
    infos = await loop.getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            if reuse:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
            except OSError as exc:
                raise OSError(
                    exc.errno,
                    f"error while attempting to bind on address {address!r}: "
                    f"{(exc.strerror or str(exc)).lower()}",
                ) from None
            sock.listen(backlog)
            sock.setblocking(False)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


class _Listener(asyncio.AbstractServer):
    """Accepts on ``sockets`` into ``factory``'s protocols until closed."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sockets: list[socket.socket],
        factory: Callable[[], asyncio.Protocol],
        batch: int,
    ) -> None:
        self._loop = loop
        self.sockets = sockets
        self._factory = factory
        self._batch = max(1, batch)
        self._serving = True
        self._pending: set[asyncio.Task[None]] = set()
        for sock in sockets:
            loop.add_reader(sock.fileno(), self._accept, sock)

    def _accept(self, sock: socket.socket) -> None:
        for _ in range(self._batch):
            try:
                conn, _ = sock.accept()
            except (BlockingIOError, InterruptedError):
                return  # the backlog is empty
            except ConnectionAbortedError:
                continue
            except OSError as exc:
                if exc.errno not in _RESOURCE_ERRORS:
                    log.warning("accept failed: %s", exc.strerror or exc)
                    return
                log.warning("accept failed (%s): retrying in 1 s", exc.strerror or exc)
                self._loop.remove_reader(sock.fileno())
                self._loop.call_later(_ACCEPT_RETRY_S, self._resume, sock)
                return
            conn.setblocking(False)
            if conn.family in (socket.AF_INET, socket.AF_INET6):
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            task = self._loop.create_task(self._serve(conn))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    async def _serve(self, conn: socket.socket) -> None:
        try:
            await self._loop.connect_accepted_socket(self._factory, conn)
        except OSError as exc:  # the client left before its transport was made
            log.debug("accepted connection dropped: %s", exc)
            conn.close()

    def _resume(self, sock: socket.socket) -> None:
        if self._serving:
            self._loop.add_reader(sock.fileno(), self._accept, sock)

    def close(self) -> None:
        """Stop accepting and close the listening sockets (open connections stay)."""
        if not self._serving:
            return
        self._serving = False
        for sock in self.sockets:
            with contextlib.suppress(ValueError, OSError):
                self._loop.remove_reader(sock.fileno())
            sock.close()

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def is_serving(self) -> bool:
        return self._serving

    async def start_serving(self) -> None:
        return None  # serving since it was made

    async def serve_forever(self) -> None:
        while self._serving:
            await asyncio.sleep(3600)

    async def wait_closed(self) -> None:
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
