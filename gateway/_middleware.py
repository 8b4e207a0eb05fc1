"""Request handling around every HTTP handler: failures as envelopes, the auth guard.

Each request passes, in this order (SPEC §10 "Order"): CORS preflight
(:mod:`._cors`) → route match (no route: ``404 NOT_FOUND``; known path, wrong method:
``405 METHOD_NOT_ALLOWED`` with ``Allow``) → for the routes it protects, the failed-auth
throttle (``429 AUTH_THROTTLED``) → the admin key or an API token (``401
UNAUTHORIZED``) → the token's scope (``403 FORBIDDEN``: a ``read`` token on anything but
``GET``/``HEAD``, any token where a key is required) → on a node that does not lead,
``503 NOT_LEADER`` with the leader's URL (every route but ``/v1/cluster``) → the 64 KiB
body cap (``413 PAYLOAD_TOO_LARGE``) → the handler, which validates its input (``400``).

All of it runs in the wrapper :meth:`Guard.add` puts around every route's handler (the
app has no middleware, whose machinery aiohttp runs per request), which also turns
whatever escapes into the envelope — a :class:`~fleet_server.FleetError` into its code's
status, aiohttp's own HTTP errors into ``NOT_FOUND``/``METHOD_NOT_ALLOWED``/
``PAYLOAD_TOO_LARGE``/``VALIDATION``, and anything else into ``500 INTERNAL`` (logged with
method and path) — so a client never sees HTML or a traceback. It then counts the request
(``fleet_http_requests_total`` by route template and status), writes the access
line (``fleet.http``, DEBUG, never a query string; built only when DEBUG is on) and, for
the audited routes, the audit line (``fleet.audit``, INFO, also for refused requests).
Requests no route takes reach the guard's last route (:meth:`Guard.add_fallback`).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from dataclasses import dataclass
from logging import INFO
from typing import Final

from aiohttp import hdrs, web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.typedefs import Handler

from fleet_server._interfaces import (
    Audience,
    ErrorCode,
    FleetError,
    Principal,
    Services,
    rejection,
    rejection_of,
)

from ._cors import CorsPolicy, answer_options
from ._envelope import rejected

__all__ = [
    "BODY_LIMIT",
    "CONTEXT",
    "GUARD",
    "UNMATCHED",
    "AuthMode",
    "Guard",
    "RequestContext",
    "RoutePolicy",
    "from_http_exception",
    "raw_path",
]

log = logging.getLogger("fleet.http")
audit_log = logging.getLogger("fleet.audit")  # the logger of Authenticator.audit

BODY_LIMIT: Final = 65_536
BODY_TIMEOUT_S: Final = 30.0
UNMATCHED: Final = "unmatched"  # the route label of every request that matched no route
_READS: Final = frozenset({"GET", "HEAD"})


class AuthMode(enum.Enum):
    NONE = "none"
    ADMIN = "admin"  # Authorization: Bearer <admin key or API token>
    # … or ?token=<API token>, or ?key=<admin key> when sse_query_auth is on
    ADMIN_OR_QUERY = "admin-or-query"


@dataclass(slots=True)
class RequestContext:
    """What the guard learned about a request, for the handler and the log lines."""

    ip: str
    audited: bool = False
    principal: Principal | None = None  # once authenticated
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


class _ClosingResponse(web.Response):
    """A response after which the connection closes at once, without waiting for the
    rest of a request body that is being trickled in."""

    @classmethod
    def of(cls, response: web.Response) -> _ClosingResponse:
        closing = cls(
            body=response.body,
            status=response.status,
            content_type=response.content_type,
            charset=response.charset,
        )
        closing.force_close()
        return closing

    async def write_eof(self, data: bytes = b"") -> None:
        request = self._req  # aiohttp lets go of it in write_eof
        transport = request.transport if request is not None else None
        await super().write_eof(data)
        if transport is not None:
            transport.close()


def from_http_exception(exc: web.HTTPException) -> web.Response:
    """The envelope of one of aiohttp's HTTP errors."""
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


async def _read_body(request: web.Request) -> bytes:
    """The whole body, refusing it as soon as it passes :data:`BODY_LIMIT`."""
    content = request.content
    if content.is_eof():  # all of it arrived with the head: no wait, no timer
        try:
            whole = content.read_nowait()
        except (HttpProcessingError, web.RequestPayloadError, ConnectionError) as exc:
            raise FleetError(ErrorCode.VALIDATION, "request body could not be read") from exc
        if len(whole) > BODY_LIMIT:
            raise _PayloadTooLargeError
        return whole
    body = bytearray()
    try:
        async with asyncio.timeout(BODY_TIMEOUT_S):
            while chunk := await request.content.readany():
                body += chunk
                if len(body) > BODY_LIMIT:
                    raise _PayloadTooLargeError
    except TimeoutError as exc:
        raise FleetError(
            ErrorCode.REQUEST_TIMEOUT, f"request body not received within {BODY_TIMEOUT_S:.0f} s"
        ) from exc
    except (HttpProcessingError, web.RequestPayloadError, ConnectionError) as exc:
        # RequestPayloadError: a body aiohttp could not decode (bad chunking, a
        # Content-Encoding that does not decompress)
        raise FleetError(ErrorCode.VALIDATION, "request body could not be read") from exc
    return bytes(body)


@dataclass(frozen=True, slots=True)
class RoutePolicy:
    """How :class:`Guard` admits requests to one route."""

    auth: AuthMode
    audited: bool = False
    reads_body: bool = False
    any_role: bool = False  # a standby serves it too
    keys_only: bool = False  # an API token is refused (403): minting tokens

    @property
    def shares_context(self) -> bool:
        """Whether the handler reads the :data:`CONTEXT` (its body, or the SSE stream's
        client IP); the others are spared storing it on the request."""
        return self.reads_body or self.auth is AuthMode.ADMIN_OR_QUERY


class Guard:
    """Every route of an app behind one gate: throttle → auth → body cap, envelope, logs.

    Each route is registered through :meth:`add`, which wraps its handler: a route with
    a :class:`RoutePolicy` passes the throttle, the credential and the body cap before
    its handler runs; every other route (health, the agent endpoint, the OpenAPI
    document, the dashboard) goes straight to it. Either way, whatever escapes becomes
    the envelope, the request is counted under its route template, and the access and
    audit lines are written after the response. A last route, added when the app starts,
    takes every request no other route takes: ``OPTIONS`` (:func:`answer_options`),
    unknown paths (404) and known paths with another method (405). The app has no
    middleware: aiohttp calls the wrapped handler directly.
    """

    def __init__(self, services: Services) -> None:
        self._auth = services.auth
        self._meter = services.meter
        self._cluster = services.cluster
        self._query_auth = services.options.sse_query_auth
        self._fallback: web.AbstractResource | None = None
        self.cors: CorsPolicy | None = None

    def add(
        self,
        app: web.Application,
        method: str,
        path: str,
        handler: Handler,
        policy: RoutePolicy | None = None,
        *,
        head: bool = False,
    ) -> web.AbstractRoute:
        """Serve ``method path`` (and ``HEAD`` with ``head``) with ``handler`` behind the
        guard; a ``policy`` whose auth is NONE leaves the route open."""
        if policy is not None and policy.auth is AuthMode.NONE:
            policy = None
        resource = app.router.add_resource(path)
        guarded = self._wrap(handler, policy, resource.canonical)
        if head:
            resource.add_route(hdrs.METH_HEAD, guarded)
        return resource.add_route(method, guarded)

    def add_fallback(self, app: web.Application) -> None:
        """The route of every request no other route takes (added last, at startup)."""
        if self._fallback is None:
            self._fallback = app.router.add_resource("/{tail:.*}")
            self._fallback.add_route(hdrs.METH_ANY, self._wrap(self._unmatched, None, UNMATCHED))

    async def _unmatched(self, request: web.Request) -> web.StreamResponse:
        """``OPTIONS`` anywhere, or the 404 / 405 aiohttp's router would have raised."""
        if request.method == hdrs.METH_OPTIONS:
            return answer_options(request, self.cors)
        allowed: set[str] = set()
        for resource in request.app.router.resources():
            if resource is not self._fallback:
                allowed |= (await resource.resolve(request))[1]
        if allowed:
            raise web.HTTPMethodNotAllowed(request.method, allowed)
        raise web.HTTPNotFound()

    def _wrap(self, handler: Handler, policy: RoutePolicy | None, label: str) -> Handler:
        admit, done, http_request = self._admit, self._done, self._meter.http_request
        shares = policy is not None and policy.shares_context

        async def guarded(request: web.Request) -> web.StreamResponse:
            debug = log.isEnabledFor(logging.DEBUG)
            started = time.perf_counter() if debug else 0.0
            context: RequestContext | None = None
            response: web.StreamResponse
            status: int | None = None  # None: cancelled
            try:
                try:
                    if policy is None:
                        response = await handler(request)
                    else:
                        ip = self._auth.client_ip(request.remote, request.headers)
                        context = RequestContext(ip, policy.audited)
                        if shares:
                            request[CONTEXT] = context
                        refusal = admit(request, context, policy)
                        if refusal is None and policy.reads_body:
                            refusal = await _admit_body(request, context)
                        response = refusal if refusal is not None else await handler(request)
                except web.HTTPException as exc:
                    if exc.status < 400:
                        status = exc.status
                        raise
                    response = from_http_exception(exc)
                except FleetError as exc:
                    response = rejection_of(exc, leader=self._hint(exc.code))
                    if exc.code is ErrorCode.REQUEST_TIMEOUT:
                        response = _ClosingResponse.of(response)
                except (asyncio.CancelledError, KeyboardInterrupt, SystemExit):
                    raise
                except Exception:
                    path = raw_path(request)
                    log.exception("request failed method=%s path=%s", request.method, path)
                    response = rejected(ErrorCode.INTERNAL)
                status = response.status
                return response
            finally:
                if (
                    debug
                    or status is None
                    or (context is not None and context.audited and audit_log.isEnabledFor(INFO))
                ):
                    done(request, label, status, context, debug, started)
                else:  # the common case, without a call: count it
                    http_request(label, status)

        return guarded

    def _done(
        self,
        request: web.Request,
        label: str,
        status: int | None,
        context: RequestContext | None,
        debug: bool,
        started: float,
    ) -> None:
        """Count the request and write its access and audit lines."""
        if status is not None:
            self._meter.http_request(label, status)
        audited = context is not None and context.audited and audit_log.isEnabledFor(INFO)
        if debug or audited:
            outcome = "cancelled" if status is None else str(status)
            ip = context.ip if context is not None else (request.remote or "unknown")
            path = raw_path(request)
            if debug:
                log.debug(
                    "%s %s %s ip=%s %.1fms",
                    request.method,
                    path,
                    outcome,
                    ip,
                    (time.perf_counter() - started) * 1000,
                )
            if audited and context is not None:
                self._auth.audit(f"{request.method} {path}", context.principal, ip, outcome)

    def _admit(
        self, request: web.Request, context: RequestContext, policy: RoutePolicy
    ) -> web.Response | None:
        """The refusal of the throttle, the credential, its scope, the role or the declared
        body size, if any.

        The admin key or an API token comes from ``Authorization: Bearer``; on routes
        that allow it, a token also from ``?token=`` and, with ``sse_query_auth`` on, the
        admin key from ``?key=``; either way a miss is one failure.
        """
        auth = self._auth
        header = request.headers.get(hdrs.AUTHORIZATION)
        principal = auth.admin_header(context.ip, header)
        if principal is None:
            presented = [auth.bearer(header)]
            token = None
            if policy.auth is AuthMode.ADMIN_OR_QUERY:
                token = request.query.get("token")
                if self._query_auth:
                    presented.append(request.query.get("key"))
            try:
                principal = auth.authenticate(
                    Audience.ADMIN,
                    context.ip,
                    lambda: _route(request),
                    *presented,
                    token=token,
                    log=log,
                )
            except FleetError as exc:
                return rejected(exc.code)
        context.principal = principal
        if (policy.keys_only and principal.token) or not principal.may(
            request.method not in _READS
        ):
            return rejected(ErrorCode.FORBIDDEN)
        if not policy.any_role and not self._cluster.leads():
            return rejection(ErrorCode.NOT_LEADER, leader=self._cluster.leader_hint("api"))
        if hdrs.CONTENT_LENGTH not in request.headers:  # most reads: spare the parse
            return None
        length = request.content_length
        if length is not None and length > BODY_LIMIT:
            return rejected(ErrorCode.PAYLOAD_TOO_LARGE)
        return None

    def _hint(self, code: ErrorCode) -> str | None:
        return self._cluster.leader_hint("api") if code is ErrorCode.NOT_LEADER else None


def _route(request: web.BaseRequest) -> str:
    return f"{request.method} {raw_path(request)}"


async def _admit_body(request: web.Request, context: RequestContext) -> web.Response | None:
    """Read the body into ``context``; the refusal when it passes :data:`BODY_LIMIT`."""
    try:
        context.body = await _read_body(request)
    except _PayloadTooLargeError:
        return rejected(ErrorCode.PAYLOAD_TOO_LARGE)
    return None


GUARD: Final = web.AppKey("fleet_gateway_guard", Guard)
