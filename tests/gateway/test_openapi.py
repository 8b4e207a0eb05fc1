"""The OpenAPI document in the repo, as served, agrees with the live route table."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import gateway
from fleet_server import Orchestrator
from gateway._dashboard import ASSETS, PAGE_PATHS
from gateway._openapi import document, operations
from tests.support.keys import ADMIN, KEY

from .support import Gateway

DOCUMENT = Path(gateway.__file__).parent / "openapi.json"
# The agent WebSocket speaks protobuf frames (protos/), not this API.
AGENT_ENDPOINT = {("GET", "/"), ("HEAD", "/")}
# The dashboard is a page for browsers (docs/tokens-and-metrics.md §3), not this API; it
# shares ``GET /`` with the agent endpoint.
DASHBOARD = {
    (method, path)
    for path in (*PAGE_PATHS, *(f"/dashboard/{name}" for name in ASSETS))
    for method in ("GET", "HEAD")
}


def live_routes(**options: Any) -> set[tuple[str, str]]:
    orch = Orchestrator(agent_key=KEY, admin_key=ADMIN, **options)
    app = orch.build_app()
    return {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None
    }


def refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for value in node.values() for r in refs(value)]
    if isinstance(node, list):
        return [r for value in node for r in refs(value)]
    return []


def resolve(doc: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = doc
    for part in ref[2:].split("/"):
        node = node[part]
    return node


async def test_the_document_is_served_verbatim_without_auth(gw: Gateway) -> None:
    reply = await gw.get("/v1/openapi.json", key=None)
    assert reply.status == 200
    assert reply.headers["Content-Type"] == "application/json; charset=utf-8"
    assert reply.body == DOCUMENT.read_bytes()
    assert reply.json["openapi"].startswith("3.1")


def test_the_live_route_table_and_the_document_agree() -> None:
    routes = live_routes()
    assert routes >= AGENT_ENDPOINT | DASHBOARD
    assert routes - AGENT_ENDPOINT - DASHBOARD == operations(document())
    assert live_routes(api=False) == AGENT_ENDPOINT | {
        ("GET", "/healthz"),
        ("GET", "/readyz"),
        ("GET", "/metrics"),
    }


def test_every_reference_resolves_and_every_path_parameter_is_declared() -> None:
    doc = document()
    for ref in refs(doc):
        resolve(doc, ref)
    for path, item in doc["paths"].items():
        names = set(re.findall(r"{(\w+)}", path))
        for method, operation in item.items():
            params = [
                resolve(doc, p["$ref"]) if "$ref" in p else p
                for p in operation.get("parameters", [])
            ]
            declared = {p["name"] for p in params if p["in"] == "path"}
            assert declared == names, (method, path)
            assert all(p.get("required") for p in params if p["in"] == "path")
            assert "operationId" in operation and operation["responses"], (method, path)


async def test_every_documented_operation_is_served(gw: Gateway) -> None:
    agent = await gw.agent()
    values = {"id": agent.instance_id, "roomId": "missing-room", "reservationId": "s_missing"}
    for method, template in sorted(operations(document())):
        if template == "/v1/events":
            continue  # a stream; covered by the SSE tests
        path = re.sub(r"{(\w+)}", lambda m: values[m.group(1)], template)
        reply = await gw.request(method, path, json={"type": "match"})
        route_miss = reply.status in (404, 405) and reply.cause in (
            "NOT_FOUND",
            "METHOD_NOT_ALLOWED",
        )
        # DELETE /v1/seats/{reservationId} answers NOT_FOUND for an unknown one, as documented
        assert not route_miss or "NOT_FOUND" in doc_causes(method, template, "404")
        documented = doc_statuses(method, template)
        assert str(reply.status) in documented, (method, template, reply.status, documented)


def doc_causes(method: str, template: str, status: str) -> set[str]:
    response = document()["paths"][template][method.lower()]["responses"].get(status, {})
    schema = response.get("content", {}).get("application/json", {}).get("schema", {})
    return set(schema.get("properties", {}).get("cause", {}).get("enum", []))


def doc_statuses(method: str, template: str) -> set[str]:
    return set(document()["paths"][template][method.lower()]["responses"])
