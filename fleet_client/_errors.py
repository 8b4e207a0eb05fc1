"""One exception tree keyed by the fleet error codes (docs/fleet-client.md §2)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

__all__ = [
    "Busy",
    "CommandFailed",
    "Conflict",
    "FleetClientError",
    "Forbidden",
    "InternalError",
    "InvalidRequest",
    "NoCandidate",
    "NotFound",
    "NotLeader",
    "NotReady",
    "OutcomeUnknown",
    "RoomExists",
    "Throttled",
    "Unauthorized",
    "Unavailable",
    "error_for",
]


class FleetClientError(Exception):
    """A call failed. ``code`` is the fleet error code (``UNAVAILABLE`` when no node
    answered); ``retryable`` says whether the same call may succeed later, after
    ``retry_after`` seconds when the server said so."""

    retryable: bool = False

    def __init__(
        self,
        code: str,
        message: str,
        *,
        retry_after: float | None = None,
        leader: str | None = None,
        maybe_sent: bool = False,
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.retry_after = retry_after
        self.leader = leader  # NOT_LEADER: the leader's address, when known
        self.maybe_sent = maybe_sent  # no answer, but the request may have been served


class InvalidRequest(FleetClientError):
    """``VALIDATION``, ``PAYLOAD_TOO_LARGE``, ``METHOD_NOT_ALLOWED``: fix the call."""


class Unauthorized(FleetClientError):
    """``UNAUTHORIZED``: the key or token was refused."""


class Forbidden(FleetClientError):
    """``FORBIDDEN``: a read token on a call that changes the fleet (or minting)."""


class NotFound(FleetClientError):
    """``ROOM_NOT_FOUND``, ``INSTANCE_NOT_FOUND``, ``NOT_FOUND``."""


class RoomExists(FleetClientError):
    """``ROOM_EXISTS``: the room id is taken (a room, or a hold on it)."""


class NoCandidate(FleetClientError):
    """``NO_CANDIDATE``: no instance can take the room (or seats) now."""


class Conflict(FleetClientError):
    """``INSTANCE_DRAINING``: the pinned instance is draining."""


class Busy(FleetClientError):
    """``INSTANCE_BUSY``: too many commands in flight on the instance."""

    retryable = True


class Throttled(FleetClientError):
    """``AUTH_THROTTLED`` or ``SSE_LIMIT``: wait before trying again."""

    retryable = True


class NotReady(FleetClientError):
    """``NOT_READY``: starting, stopping, or settling after a takeover (``Retry-After``)."""

    retryable = True


class NotLeader(FleetClientError):
    """``NOT_LEADER``: a standby answered; the client follows ``leader``."""

    retryable = True


class Unavailable(FleetClientError):
    """No node answered: refused, reset or timed out."""

    retryable = True


class CommandFailed(FleetClientError):
    """``COMMAND_FAILED``: the game server refused the command."""


class OutcomeUnknown(FleetClientError):
    """The game server may or may not have done it: ``COMMAND_TIMEOUT``,
    ``INSTANCE_DISCONNECTED``, ``INTERNAL``, or a connection lost mid-call; for a create,
    raised once resolving could not find the room (docs/fleet-client.md §3)."""


class InternalError(FleetClientError):
    """An answer the client does not understand."""


_CLASSES: Final[Mapping[str, type[FleetClientError]]] = {
    "VALIDATION": InvalidRequest,
    "PAYLOAD_TOO_LARGE": InvalidRequest,
    "METHOD_NOT_ALLOWED": InvalidRequest,
    "REQUEST_TIMEOUT": InvalidRequest,
    "UNAUTHORIZED": Unauthorized,
    "FORBIDDEN": Forbidden,
    "ROOM_NOT_FOUND": NotFound,
    "INSTANCE_NOT_FOUND": NotFound,
    "NOT_FOUND": NotFound,
    "ROOM_EXISTS": RoomExists,
    "NO_CANDIDATE": NoCandidate,
    "INSTANCE_DRAINING": Conflict,
    "INSTANCE_BUSY": Busy,
    "AUTH_THROTTLED": Throttled,
    "SSE_LIMIT": Throttled,
    "NOT_READY": NotReady,
    "NOT_LEADER": NotLeader,
    "COMMAND_FAILED": CommandFailed,
    "COMMAND_TIMEOUT": OutcomeUnknown,
    "INSTANCE_DISCONNECTED": OutcomeUnknown,
    "INTERNAL": OutcomeUnknown,
    "UNAVAILABLE": Unavailable,
}

AMBIGUOUS: Final = frozenset({"COMMAND_TIMEOUT", "INSTANCE_DISCONNECTED", "INTERNAL"})
"""Codes after which a create may have happened on a game server."""


def error_for(
    code: str, message: str, *, retry_after: float | None = None, leader: str | None = None
) -> FleetClientError:
    """The exception of a fleet error code (``InternalError`` for an unknown one)."""
    cls = _CLASSES.get(code, InternalError)
    return cls(code, message, retry_after=retry_after, leader=leader)
