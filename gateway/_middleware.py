"""Request handling around every HTTP handler: failures as envelopes, the auth guard.

Each request passes, in this order (SPEC §10 "Order"): CORS preflight
(:mod:`._cors`) → route match (no route: ``404 NOT_FOUND``; known path, wrong method:
``405 METHOD_NOT_ALLOWED`` with ``Allow``) → :class:`Guard`: the failed-auth throttle
(``429 AUTH_THROTTLED``) → the admin key (``401 UNAUTHORIZED``) → the 64 KiB body
cap (``413 PAYLOAD_TOO_LARGE``) → the handler, which validates its input (``400``).

:func:`envelope_middleware`, outermost, turns whatever escapes into the envelope —
a :class:`~fleet_server.FleetError` into its code's status, aiohttp's own HTTP errors
into ``NOT_FOUND``/``METHOD_NOT_ALLOWED``/``PAYLOAD_TOO_LARGE``/``VALIDATION``, and
anything else into ``500 INTERNAL`` (logged with method and path) — so a client
never sees HTML or a traceback. It then writes the access line (``fleet.http``,
DEBUG, never a query string) and, for the audited routes, the audit line
(``fleet.audit``, INFO, also for refused requests).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from aiohttp import hdrs, web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.typedefs import Handler

from fleet_server._auth import KeyRing, fingerprint
from fleet_server._errors import ErrorCode, FleetError
from fleet_server._transport import client_ip

from ._envelope import rejected

if TYPE_CHECKING:
    from fleet_server._orchestrator import Orchestrator

__all__ = [
    "BODY_LIMIT",
    "CONTEXT",
    "AuthMode",
    "Guard",
    "RequestContext",
    "envelope_middleware",
    "raw_path",
]

log = logging.getLogger("fleet.http")
audit_log = logging.getLogger("fleet.audit")

BODY_LIMIT: Final = 65_536
BODY_TIMEOUT_S: Final = 30.0


class AuthMode(enum.Enum):
    NONE = "none"
    ADMIN = "admin"  # Authorization: Bearer <admin key>
    ADMIN_OR_QUERY = "admin-or-query"  # … or ?key=<admin key> when sse_query_auth is on


@dataclass(slots=True)
class RequestContext:
    """What the guard learned about a request, for the handler and the log lines."""

    ip: str
    audited: bool = False
    key_id: str | None = None  # the matched key's fingerprint
    body: bytes = b""


CONTEXT: Final = web.RequestKey("fleet_request_context", RequestContext)


def raw_path(request: web.BaseRequest) -> str:
    """The request path as sent, never decoded, without its query string."""
    path = request.raw_path
    if not path.startswith("/"):  # absolute-form request target
        return request.rel_url.raw_path
    return path.split("?", 1)[0]


class _PayloadTooLargeError(Exception):
    pass


def _from_http_exception(exc: web.HTTPException) -> web.Response:
    if exc.status == 404:
        return rejected(ErrorCode.NOT_FOUND)
    if exc.status == 405:
        allowed = exc.allowed_methods if isinstance(exc, web.HTTPMethodNotAllowed) else set()
        return rejected(ErrorCode.METHOD_NOT_ALLOWED, {hdrs.ALLOW: ", ".join(sorted(allowed))})
    if exc.status == 413:
        return rejected(ErrorCode.PAYLOAD_TOO_LARGE)
    if 400 <= exc.status < 500:
        return rejected(ErrorCode.VALIDATION)
    log.error("http error status=%d", exc.status)
    return rejected(ErrorCode.INTERNAL)


@web.middleware
async def envelope_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    outcome = "cancelled"
    try:
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                outcome = str(exc.status)
                raise
            response = _from_http_exception(exc)
        except FleetError as exc:
            response = rejected(exc.code)
        except (asyncio.CancelledError, KeyboardInterrupt, SystemExit):
            raise
        except Exception:
            log.exception("request failed method=%s path=%s", request.method, raw_path(request))
            response = rejected(ErrorCode.INTERNAL)
        outcome = str(response.status)
        return response
    finally:
        context = request.get(CONTEXT)
        ip = context.ip if context is not None else (request.remote or "unknown")
        log.debug(
            "%s %s %s ip=%s %.1fms",
            request.method,
            raw_path(request),
            outcome,
            ip,
            (time.perf_counter() - started) * 1000,
        )
        if context is not None and context.audited:
            audit_log.info(
                "audit route=%s %s key=%s ip=%s outcome=%s",
                request.method,
                raw_path(request),
                context.key_id or "unknown",
                ip,
                outcome,
            )


async def _read_body(request: web.Request) -> bytes:
    """The whole body, refusing it as soon as it passes :data:`BODY_LIMIT`."""
    body = bytearray()
    try:
        async with asyncio.timeout(BODY_TIMEOUT_S):
            while chunk := await request.content.readany():
                body += chunk
                if len(body) > BODY_LIMIT:
                    raise _PayloadTooLargeError
    except (HttpProcessingError, ConnectionError, TimeoutError) as exc:
        raise FleetError(ErrorCode.VALIDATION, "request body could not be read") from exc
    return bytes(body)


class Guard:
    """Wraps a route's handler in the throttle → auth → body-cap sequence."""

    def __init__(self, orch: Orchestrator) -> None:
        self._orch = orch

    def wrap(
        self,
        handler: Handler,
        *,
        auth: AuthMode,
        audited: bool = False,
        reads_body: bool = False,
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def guarded(request: web.Request) -> web.StreamResponse:
            refusal = await self._admit(request, auth, audited, reads_body)
            if refusal is not None:
                return refusal
            return await handler(request)

        return guarded

    async def _admit(
        self, request: web.Request, auth: AuthMode, audited: bool, reads_body: bool
    ) -> web.StreamResponse | None:
        orch = self._orch
        context = RequestContext(ip=client_ip(request, orch.trust_proxy), audited=audited)
        request[CONTEXT] = context
        if auth is not AuthMode.NONE:
            throttle = orch.throttle
            route = f"{request.method} {raw_path(request)}"
            if throttle.blocked(context.ip):
                log.warning("auth throttled ip=%s route=%s", context.ip, route)
                return rejected(ErrorCode.AUTH_THROTTLED)
            key = self._authenticate(request, auth)
            if key is None:
                throttle.failure(context.ip)
                log.warning("auth failed ip=%s route=%s", context.ip, route)
                return rejected(ErrorCode.UNAUTHORIZED)
            context.key_id = fingerprint(key)
        length = request.content_length
        if length is not None and length > BODY_LIMIT:
            return rejected(ErrorCode.PAYLOAD_TOO_LARGE)
        if reads_body:
            try:
                context.body = await _read_body(request)
            except _PayloadTooLargeError:
                return rejected(ErrorCode.PAYLOAD_TOO_LARGE)
        return None

    def _authenticate(self, request: web.Request, auth: AuthMode) -> str | None:
        """The admin key the request presents, or None (one failure, however presented)."""
        keys = self._orch.admin_keys
        key = keys.match(KeyRing.bearer(request.headers.get(hdrs.AUTHORIZATION)))
        if key is None and auth is AuthMode.ADMIN_OR_QUERY and self._orch.sse_query_auth:
            key = keys.match(request.query.get("key"))
        return key
