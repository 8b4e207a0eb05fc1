"""The uniform failure envelope, ``{"status":"rejected","cause":"<CODE>"}``.

One builder for every HTTP answer that refuses something — the agent upgrade and
every gateway route — with the status looked up in the one code table, so a 401 is
byte-identical everywhere.
"""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web

from ._errors import ERROR_TABLE, ErrorCode

__all__ = ["rejection"]


def rejection(code: ErrorCode, headers: Mapping[str, str] | None = None) -> web.Response:
    """The failure envelope for ``code``, with its HTTP status from the code table."""
    return web.Response(
        body=b'{"status":"rejected","cause":"' + code.value.encode() + b'"}',
        status=ERROR_TABLE[code].http,
        headers=dict(headers) if headers else None,
        content_type="application/json",
        charset="utf-8",
    )
