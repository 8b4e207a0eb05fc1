"""The uniform failure envelope, ``{"status":"rejected","cause":"<CODE>"}``.

One builder for every HTTP answer that refuses something — the agent upgrade and
every gateway route — with the status looked up in the one code table, so a 401 is
byte-identical everywhere.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from aiohttp import web

from ._errors import ERROR_TABLE, ErrorCode, FleetError

__all__ = ["LEADER_HEADER", "rejection", "rejection_of"]

LEADER_HEADER = "Fleet-Leader"


def rejection(
    code: ErrorCode, headers: Mapping[str, str] | None = None, *, leader: str | None = None
) -> web.Response:
    """The failure envelope for ``code``, with its HTTP status from the code table.

    ``NOT_LEADER`` adds ``"leader"``: the leader's URL for this surface, or null, and
    the same URL in ``Fleet-Leader`` (CONTRACT §10).
    """
    body = b'{"status":"rejected","cause":"' + code.value.encode() + b'"'
    if code is ErrorCode.NOT_LEADER:
        body += b',"leader":' + json.dumps(leader).encode()
        if leader is not None:
            headers = {**(headers or {}), LEADER_HEADER: leader}
    return web.Response(
        body=body + b"}",
        status=ERROR_TABLE[code].http,
        headers=dict(headers) if headers else None,
        content_type="application/json",
        charset="utf-8",
    )


def rejection_of(error: FleetError, *, leader: str | None = None) -> web.Response:
    """:func:`rejection` for a raised error, with its ``Retry-After`` when it has one."""
    headers = None
    if error.retry_after_s is not None:
        headers = {"Retry-After": str(error.retry_after_s)}
    return rejection(error.code, headers, leader=leader)
