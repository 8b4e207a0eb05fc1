"""The gRPC server: ``FleetControl``, health and reflection on one grpc.aio port.

:func:`start_grpc` binds the options' ``host``:``grpc_port`` on the running loop with
``SO_REUSEPORT`` off (a port in use is an ``OSError``, not a silent second listener)
and reports SERVING once it is up. Shutdown comes in two steps that the orchestrator
places in its own order: :meth:`GrpcServer.end_streams` (NOT_SERVING, every
``WatchEvents`` stream ends) and :meth:`GrpcServer.stop` (the port closes after a short
grace for calls in flight). The health and reflection services need no key.
"""

from __future__ import annotations

from typing import Final

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from rivalis.fleet.v1 import control_pb2

from fleet_server._interfaces import Services

from ._grpc_service import FleetControlService, method_handlers
from ._grpc_watch import WatchHub

__all__ = ["SERVICE_NAME", "GrpcServer", "start_grpc"]

SERVICE_NAME: Final = control_pb2.DESCRIPTOR.services_by_name["FleetControl"].full_name
STOP_GRACE_S: Final = 1.0


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


class GrpcServer:
    """A started gRPC server; ``port`` is the bound port. Stopping twice is harmless."""

    def __init__(
        self,
        server: grpc.aio.Server,
        health_servicer: health.aio.HealthServicer,
        hub: WatchHub,
        port: int,
    ) -> None:
        self._server = server
        self._health = health_servicer
        self._hub = hub
        self.port = port
        self._stopped = False

    @property
    def watch_streams(self) -> int:
        """``WatchEvents`` streams open right now."""
        return len(self._hub)

    async def end_streams(self) -> None:
        """Report NOT_SERVING and end every ``WatchEvents`` stream (new ones end at once)."""
        self._hub.close()
        await self._health.enter_graceful_shutdown()

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        await self.end_streams()
        await self._server.stop(STOP_GRACE_S)


async def start_grpc(services: Services) -> GrpcServer:
    """Serve ``FleetControl`` on the options' ``host``:``grpc_port`` (0: ephemeral)."""
    options = services.options
    if options.grpc_port is None:
        raise ValueError("grpc_port is not set")
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    hub = WatchHub(services.hub, limit=options.sse_stream_limit)
    handlers = method_handlers(
        FleetControlService(
            services.fleet, services.cluster, services.auth, hub, services.agent_tokens
        )
    )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
    server.add_registered_method_handlers(SERVICE_NAME, handlers)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    address = _address(options.host, options.grpc_port)
    try:
        port = server.add_insecure_port(address)
    except RuntimeError as exc:
        raise OSError(f"gRPC could not bind {address}: address in use or unavailable") from exc
    if port == 0:  # older grpcio reported a failed bind this way
        raise OSError(f"gRPC could not bind {address}: address in use or unavailable")
    await server.start()
    for service in ("", SERVICE_NAME):
        await health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
    return GrpcServer(server, health_servicer, hub, port)
