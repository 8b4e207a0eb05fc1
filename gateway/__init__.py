"""The orchestrator's external surfaces: REST ``/v1`` + SSE and the gRPC ``FleetControl``.

``fleet_server.Orchestrator`` mounts them according to its options; nothing here is
meant to be used on its own.
"""

from ._grpc import GrpcServer, start_grpc
from ._rest import mount_health, mount_rest
from ._server import FleetRunner

__all__ = ["FleetRunner", "GrpcServer", "mount_health", "mount_rest", "start_grpc"]
