"""Fleet errors and the one table mapping each code to its HTTP and gRPC status.

Errors::

    FleetError              every failure of a fleet operation; ``.code`` is an ErrorCode

The core raises :class:`FleetError`; the gateway turns it into an HTTP envelope or a
gRPC status by looking the code up in :data:`ERROR_TABLE` (data, not logic).
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Final, NamedTuple

__all__ = ["ERROR_TABLE", "ErrorCode", "ErrorStatus", "FleetError"]


class ErrorCode(StrEnum):
    VALIDATION = "VALIDATION"
    UNAUTHORIZED = "UNAUTHORIZED"
    INSTANCE_NOT_FOUND = "INSTANCE_NOT_FOUND"
    ROOM_NOT_FOUND = "ROOM_NOT_FOUND"
    NO_CANDIDATE = "NO_CANDIDATE"
    ROOM_EXISTS = "ROOM_EXISTS"
    INSTANCE_DRAINING = "INSTANCE_DRAINING"
    PAYLOAD_TOO_LARGE = "PAYLOAD_TOO_LARGE"
    INSTANCE_BUSY = "INSTANCE_BUSY"
    AUTH_THROTTLED = "AUTH_THROTTLED"
    SSE_LIMIT = "SSE_LIMIT"
    COMMAND_FAILED = "COMMAND_FAILED"
    INSTANCE_DISCONNECTED = "INSTANCE_DISCONNECTED"
    COMMAND_TIMEOUT = "COMMAND_TIMEOUT"
    NOT_FOUND = "NOT_FOUND"
    METHOD_NOT_ALLOWED = "METHOD_NOT_ALLOWED"
    INTERNAL = "INTERNAL"
    NOT_READY = "NOT_READY"
    NOT_LEADER = "NOT_LEADER"
    FORBIDDEN = "FORBIDDEN"
    REQUEST_TIMEOUT = "REQUEST_TIMEOUT"


class ErrorStatus(NamedTuple):
    http: int
    grpc: str  # a grpc.StatusCode member name


ERROR_TABLE: Final[Mapping[ErrorCode, ErrorStatus]] = {
    ErrorCode.VALIDATION: ErrorStatus(400, "INVALID_ARGUMENT"),
    ErrorCode.UNAUTHORIZED: ErrorStatus(401, "UNAUTHENTICATED"),
    ErrorCode.INSTANCE_NOT_FOUND: ErrorStatus(404, "NOT_FOUND"),
    ErrorCode.ROOM_NOT_FOUND: ErrorStatus(404, "NOT_FOUND"),
    ErrorCode.NO_CANDIDATE: ErrorStatus(409, "FAILED_PRECONDITION"),
    ErrorCode.ROOM_EXISTS: ErrorStatus(409, "ALREADY_EXISTS"),
    ErrorCode.INSTANCE_DRAINING: ErrorStatus(409, "FAILED_PRECONDITION"),
    ErrorCode.PAYLOAD_TOO_LARGE: ErrorStatus(413, "RESOURCE_EXHAUSTED"),
    ErrorCode.INSTANCE_BUSY: ErrorStatus(429, "RESOURCE_EXHAUSTED"),
    ErrorCode.AUTH_THROTTLED: ErrorStatus(429, "RESOURCE_EXHAUSTED"),
    ErrorCode.SSE_LIMIT: ErrorStatus(429, "RESOURCE_EXHAUSTED"),
    ErrorCode.COMMAND_FAILED: ErrorStatus(502, "ABORTED"),
    ErrorCode.INSTANCE_DISCONNECTED: ErrorStatus(502, "UNAVAILABLE"),
    ErrorCode.COMMAND_TIMEOUT: ErrorStatus(504, "DEADLINE_EXCEEDED"),
    ErrorCode.NOT_FOUND: ErrorStatus(404, "NOT_FOUND"),
    ErrorCode.METHOD_NOT_ALLOWED: ErrorStatus(405, "UNIMPLEMENTED"),
    ErrorCode.INTERNAL: ErrorStatus(500, "INTERNAL"),
    ErrorCode.NOT_READY: ErrorStatus(503, "UNAVAILABLE"),
    ErrorCode.NOT_LEADER: ErrorStatus(503, "UNAVAILABLE"),
    ErrorCode.FORBIDDEN: ErrorStatus(403, "PERMISSION_DENIED"),
    ErrorCode.REQUEST_TIMEOUT: ErrorStatus(408, "DEADLINE_EXCEEDED"),  # a body sent too slowly
}


class FleetError(Exception):
    """A fleet operation failed; ``code`` says why, ``str()`` explains it."""

    def __init__(
        self,
        code: ErrorCode | str,
        message: str | None = None,
        *,
        retry_after_s: int | None = None,
    ) -> None:
        self.code = ErrorCode(code)
        self.message = message or self.code.value
        self.retry_after_s = retry_after_s  # sent as Retry-After (REST) / retry-after (gRPC)
        super().__init__(self.message)

    @property
    def http_status(self) -> int:
        return ERROR_TABLE[self.code].http

    @property
    def grpc_status(self) -> str:
        return ERROR_TABLE[self.code].grpc

    def __repr__(self) -> str:
        return f"FleetError({self.code.value!r}, {self.message!r})"
