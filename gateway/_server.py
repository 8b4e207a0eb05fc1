"""The HTTP server around the app: malformed requests and lost connections.

aiohttp answers a request it cannot parse itself — a plain-text 400 that quotes the
client's bytes — and logs a traceback for each. Here such a request gets the JSON
envelope instead (``VALIDATION``, or ``PAYLOAD_TOO_LARGE`` for an oversize line or
header) and the connection is closed; the log gets one line when a burst starts and one
summary (count and first cause) per interval, never a traceback or the client's bytes.
The same goes for a body that turns out undecodable after its handler has answered
(aiohttp reads the rest of it to keep the connection, and logged a traceback when that
failed), and for the one HTTP error aiohttp raises before the app's handlers run: an
``Expect`` other than ``100-continue`` (a plain-text 417 quoting it) is ``VALIDATION``.
A handler may also ask to hear at once when its client's connection is lost
(:func:`on_connection_lost`), which frees an SSE slot the moment its client goes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any, Final

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong
from aiohttp.web_protocol import RequestHandler

from fleet_server._interfaces import ErrorCode, rejection

from ._middleware import from_http_exception

__all__ = ["BadRequestLog", "FleetRunner", "on_connection_lost"]

log = logging.getLogger("fleet.http")

SUMMARY_INTERVAL_S: Final = 10.0


class BadRequestLog:
    """One line when bad requests start, then one summary per interval while they go on."""

    def __init__(self, interval_s: float = SUMMARY_INTERVAL_S) -> None:
        self._interval_s = interval_s
        self._count = 0
        self._first = ""
        self._window_end = 0.0
        self._flush: asyncio.TimerHandle | None = None
        self.lines = 0  # log lines written, for tests

    def record(self, cause: str) -> None:
        now = time.monotonic()
        if now >= self._window_end and self._count == 0:
            self._window_end = now + self._interval_s
            self.lines += 1
            log.warning(
                "bad request cause=%s (more are summarised every %.0f s)", cause, self._interval_s
            )
            return
        if self._count == 0:
            self._first = cause
            delay = max(0.0, self._window_end - now)
            self._flush = asyncio.get_running_loop().call_later(delay, self._summary)
        self._count += 1

    def _summary(self) -> None:
        self._flush = None
        if self._count:
            self.lines += 1
            log.warning(
                "bad requests count=%d first_cause=%s interval_s=%.0f",
                self._count,
                self._first,
                self._interval_s,
            )
        self._count = 0
        self._window_end = time.monotonic() + self._interval_s


def _cause(status: int, exc: BaseException | None) -> str:
    """A short, fixed description: the error's class, never its message (which may
    quote the client's bytes)."""
    return type(exc).__name__ if exc is not None else f"status {status}"


class _Handler(RequestHandler):
    """aiohttp's connection handler with our answer to unparsable requests."""

    bad_requests: BadRequestLog  # set by _Server when it creates the handler

    def handle_error(
        self,
        request: Any,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status >= 500 and not isinstance(exc, HttpProcessingError):
            return super().handle_error(request, status, exc, message)  # a bug: keep its log
        self.bad_requests.record(_cause(status, exc))
        if request.writer.output_size > 0:
            raise ConnectionError("a response was already sent")
        too_large = isinstance(exc, LineTooLong) or status in (413, 431)
        response = rejection(ErrorCode.PAYLOAD_TOO_LARGE if too_large else ErrorCode.VALIDATION)
        response.force_close()
        return response

    def finish_response(
        self, request: web.BaseRequest, resp: web.StreamResponse, start_time: float | None
    ) -> Coroutine[Any, Any, tuple[web.StreamResponse, bool]]:
        # Not a coroutine of its own: aiohttp's is returned, one frame less per request.
        if resp.status >= 400 and isinstance(resp, web.HTTPException):
            # raised before the guard could answer it: aiohttp's Expect check
            resp = from_http_exception(resp)
        return super().finish_response(request, resp, start_time)

    def log_exception(self, *args: Any, **kw: Any) -> None:
        exc = kw.get("exc_info")
        if isinstance(exc, web.RequestPayloadError):
            # the rest of a body read after the handler answered could not be decoded;
            # aiohttp closes the connection
            self.bad_requests.record(_cause(400, exc.__cause__ or exc))
            return
        super().log_exception(*args, **kw)

    def connection_lost(self, exc: BaseException | None) -> None:
        callbacks = getattr(self, "_lost_callbacks", ())
        self._lost_callbacks: list[Callable[[], None]] = []
        super().connection_lost(exc)
        for callback in callbacks:
            try:
                callback()
            except Exception:
                log.exception("connection-lost callback failed")


class _Server(web.Server):
    """``web.Server`` whose connections are :class:`_Handler` s."""

    bad_requests: BadRequestLog

    def __call__(self) -> RequestHandler:
        handler = _Handler(self, loop=self._loop, **self._kwargs)
        handler.bad_requests = self.bad_requests
        return handler


class FleetRunner(web.AppRunner):
    """``web.AppRunner`` serving the app through :class:`_Handler` connections."""

    def __init__(self, app: web.Application, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.bad_requests = BadRequestLog()

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        # The app builds a plain web.Server; _Server only changes which handler class
        # its connections get, so the instance is re-classed rather than rebuilt.
        server.__class__ = _Server
        assert isinstance(server, _Server)
        server.bad_requests = self.bad_requests
        return server


def on_connection_lost(request: web.BaseRequest, callback: Callable[[], None]) -> bool:
    """Call ``callback`` when the request's connection is lost; False when this server
    cannot tell (then the caller keeps polling)."""
    protocol = request.protocol
    if not isinstance(protocol, _Handler):
        return False
    callbacks = getattr(protocol, "_lost_callbacks", None)
    if callbacks is None:
        callbacks = protocol._lost_callbacks = []
    callbacks.append(callback)
    return True
