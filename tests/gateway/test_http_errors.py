"""HTTP-layer failures as envelopes: 404, 405 + Allow, 413 before parsing (SPEC §10)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.support.keys import ADMIN

from .support import Calls, Gateway

LIMIT = 65_536


def padded_body(size: int) -> bytes:
    """A valid create body of exactly ``size`` bytes."""
    head = b'{"type": "match"'
    return head + b" " * (size - len(head) - 1) + b"}"


async def test_a_body_over_64_kib_is_413_and_never_parsed(gw: Gateway, create_calls: Calls) -> None:
    await gw.agent()
    json_type = {"Content-Type": "application/json"}
    reply = await gw.post("/v1/rooms", data=padded_body(LIMIT + 1), headers=json_type)
    assert (reply.status, reply.cause) == (413, "PAYLOAD_TOO_LARGE")

    async def streamed() -> AsyncIterator[bytes]:  # chunked: no Content-Length to trust
        body = padded_body(LIMIT + 1)
        for start in range(0, len(body), 4096):
            yield body[start : start + 4096]

    reply = await gw.post("/v1/rooms", data=streamed(), headers=json_type)
    assert (reply.status, reply.cause) == (413, "PAYLOAD_TOO_LARGE")
    assert create_calls == []

    reply = await gw.post("/v1/rooms", data=padded_body(LIMIT), headers=json_type)
    assert reply.status == 201
    assert len(create_calls) == 1


async def test_the_body_cap_comes_after_auth_and_covers_every_v1_route(gw: Gateway) -> None:
    big = padded_body(LIMIT + 1)
    reply = await gw.post("/v1/rooms", key=None, data=big)
    assert (reply.status, reply.cause) == (401, "UNAUTHORIZED")
    reply = await gw.delete("/v1/rooms/r1", data=big)
    assert (reply.status, reply.cause) == (413, "PAYLOAD_TOO_LARGE")
    reply = await gw.post("/v1/instances/i_x/drain", data=big)
    assert (reply.status, reply.cause) == (413, "PAYLOAD_TOO_LARGE")


@pytest.mark.parametrize("path", ["/nope", "/v1", "/v1/", "/v1/nope", "/v2/stats", "/v1/stats/"])
async def test_an_unknown_path_is_404_not_found_before_auth(gw: Gateway, path: str) -> None:
    for key in (ADMIN, None):
        reply = await gw.get(path, key=key)
        assert (reply.status, reply.cause) == (404, "NOT_FOUND"), path
        assert reply.headers["Content-Type"] == "application/json; charset=utf-8"


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("DELETE", "/v1/stats", "GET"),
        ("PUT", "/v1/rooms", "GET, POST"),
        ("PATCH", "/v1/rooms/r1", "DELETE, GET"),
        ("POST", "/v1/events", "GET"),
        ("GET", "/v1/instances/i_x/drain", "POST"),
        ("POST", "/v1/openapi.json", "GET"),
        ("DELETE", "/healthz", "GET"),
    ],
)
async def test_a_wrong_method_is_405_with_allow_before_auth(
    gw: Gateway, method: str, path: str, allow: str
) -> None:
    reply = await gw.request(method, path, key=None)
    assert (reply.status, reply.cause) == (405, "METHOD_NOT_ALLOWED")
    assert reply.headers["Allow"] == allow


async def test_head_is_not_served_and_gets_an_allow_header(gw: Gateway) -> None:
    reply = await gw.request("HEAD", "/v1/stats")
    assert reply.status == 405 and reply.headers["Allow"] == "GET" and reply.body == b""


async def test_a_plain_request_to_the_agent_endpoint_is_400(gw: Gateway) -> None:
    reply = await gw.get("/", key=None)
    assert (reply.status, reply.cause) == (400, "VALIDATION")
