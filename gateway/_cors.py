"""CORS for the HTTP surfaces (SPEC §10 "CORS").

Off unless origins are configured. A listed ``Origin`` (or any, with ``*``) gets
``Access-Control-Allow-Origin`` and ``Access-Control-Expose-Headers: ETag`` on every
response — errors and SSE streams included — through the app's response-prepare
signal. ``OPTIONS`` is never routed: the gateway's guard (its last route takes them
all) hands every ``OPTIONS`` request to :func:`answer_options` before auth, so with
CORS on a preflight is answered ``204``; otherwise it is ``404 NOT_FOUND``. With CORS
off nothing is installed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from aiohttp import hdrs, web

__all__ = ["CORS_POLICY", "CorsPolicy", "answer_options", "install_cors"]

ALLOW_METHODS: Final = "GET, POST, DELETE, OPTIONS"
EXPOSE_HEADERS: Final = "ETag"
PREFLIGHT_MAX_AGE: Final = "600"


class CorsPolicy:
    """Which origins may read responses: an allow-list, or ``*`` for any."""

    def __init__(self, origins: Sequence[str]) -> None:
        self._any = "*" in origins
        self._origins = frozenset(o for o in origins if o != "*")

    @property
    def enabled(self) -> bool:
        return self._any or bool(self._origins)

    def allow_origin(self, origin: str | None) -> str | None:
        """The ``Access-Control-Allow-Origin`` value for ``origin``, or None."""
        if not origin:
            return None
        if self._any:
            return "*"
        return origin if origin in self._origins else None

    def apply(self, request: web.BaseRequest, response: web.StreamResponse) -> None:
        allowed = self.allow_origin(request.headers.get(hdrs.ORIGIN))
        if allowed is None:
            return
        headers = response.headers
        headers[hdrs.ACCESS_CONTROL_ALLOW_ORIGIN] = allowed
        headers[hdrs.ACCESS_CONTROL_EXPOSE_HEADERS] = EXPOSE_HEADERS
        if allowed != "*":
            vary = headers.get(hdrs.VARY)
            if vary is None:
                headers[hdrs.VARY] = "Origin"
            elif "origin" not in {v.strip().lower() for v in vary.split(",")}:
                headers[hdrs.VARY] = f"{vary}, Origin"

    def preflight(self, request: web.Request) -> web.Response:
        response = web.Response(status=204)
        if self.allow_origin(request.headers.get(hdrs.ORIGIN)) is not None:
            response.headers[hdrs.ACCESS_CONTROL_ALLOW_METHODS] = ALLOW_METHODS
            requested = request.headers.get(hdrs.ACCESS_CONTROL_REQUEST_HEADERS)
            if requested:
                response.headers[hdrs.ACCESS_CONTROL_ALLOW_HEADERS] = requested
            response.headers[hdrs.ACCESS_CONTROL_MAX_AGE] = PREFLIGHT_MAX_AGE
        return response


CORS_POLICY: Final = web.AppKey("fleet_cors_policy", CorsPolicy)


def _is_preflight(request: web.Request) -> bool:
    headers = request.headers
    return hdrs.ORIGIN in headers and hdrs.ACCESS_CONTROL_REQUEST_METHOD in headers


def answer_options(request: web.Request, policy: CorsPolicy | None) -> web.Response:
    """The answer to an ``OPTIONS`` request: a preflight with CORS on, else ``404``."""
    if policy is not None and policy.enabled and _is_preflight(request):
        return policy.preflight(request)
    raise web.HTTPNotFound()


def install_cors(app: web.Application, origins: Sequence[str]) -> CorsPolicy | None:
    """Enable CORS on ``app`` for ``origins`` and return its policy (nothing happens, and
    None is returned, for an empty list)."""
    policy = CorsPolicy(origins)
    if not policy.enabled:
        return None
    app[CORS_POLICY] = policy

    async def on_prepare(request: web.Request, response: web.StreamResponse) -> None:
        if response.status != 101:  # a WebSocket upgrade is no CORS response
            policy.apply(request, response)

    app.on_response_prepare.append(on_prepare)
    return policy
