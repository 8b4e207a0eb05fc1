"""``GET /metrics``: the orchestrator's registry in the Prometheus text format.

The exposition is ``prometheus_client``'s own (its aiohttp handler: content negotiation,
OpenMetrics on request, compression); the figures are in ``fleet_server``'s metrics
(docs/tokens-and-metrics.md §2). Open unless ``metrics_auth`` is on, then the admin key
or an API token of either scope; every role serves it (a standby reports
``fleet_leader 0``).
"""

from __future__ import annotations

from typing import Final

from aiohttp import web
from prometheus_client.aiohttp import make_aiohttp_handler

from fleet_server._interfaces import Services

from ._middleware import AuthMode, RoutePolicy
from ._rest import install_guard

__all__ = ["METRICS_PATH", "mount_metrics"]

METRICS_PATH: Final = "/metrics"


def mount_metrics(app: web.Application, services: Services) -> None:
    guard = install_guard(app, services)
    auth = AuthMode.ADMIN if services.options.metrics_auth else AuthMode.NONE
    handler = make_aiohttp_handler(services.metrics.registry)
    guard.add(app, "GET", METRICS_PATH, handler, RoutePolicy(auth, any_role=True))
