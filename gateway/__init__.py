"""The orchestrator's external surfaces: REST ``/v1`` + SSE, the gRPC ``FleetControl``,
``/metrics`` and the dashboard.

``fleet_server.Orchestrator`` mounts them according to its options; nothing here is
meant to be used on its own.
"""

from ._dashboard import mount_dashboard
from ._grpc import GrpcServer, start_grpc
from ._listener import AcceptingSite
from ._metrics import mount_metrics
from ._rest import mount_agents, mount_health, mount_rest
from ._server import FleetRunner

__all__ = [
    "AcceptingSite",
    "FleetRunner",
    "GrpcServer",
    "mount_agents",
    "mount_dashboard",
    "mount_health",
    "mount_metrics",
    "mount_rest",
    "start_grpc",
]
