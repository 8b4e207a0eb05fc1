"""The OpenAPI 3.1 document of the HTTP API, kept next to this module as ``openapi.json``.

It is served verbatim at ``GET /v1/openapi.json``. The document is written by hand
and describes what the routes do; a test holds it to the live route table.
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any, Final

from aiohttp import web

from ._envelope import json_body

__all__ = ["DOCUMENT_NAME", "document", "document_bytes", "operations", "serve_document"]

DOCUMENT_NAME: Final = "openapi.json"
_METHODS: Final = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})


@functools.cache
def document_bytes() -> bytes:
    return resources.files(__package__).joinpath(DOCUMENT_NAME).read_bytes()


def document() -> dict[str, Any]:
    value: dict[str, Any] = json.loads(document_bytes())
    return value


def operations(doc: dict[str, Any]) -> set[tuple[str, str]]:
    """Every ``(METHOD, path template)`` the document describes."""
    return {
        (method.upper(), path)
        for path, item in doc.get("paths", {}).items()
        for method in item
        if method in _METHODS
    }


async def serve_document(request: web.Request) -> web.StreamResponse:
    return json_body(document_bytes())
