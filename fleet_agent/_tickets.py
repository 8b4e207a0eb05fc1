"""Seat tickets (docs/matchmaking.md §4): signed by the orchestrator, verified offline by
the game server's agent with a key both derive from the agent key.

A ticket is ``"v1." + b64url(payload) + "." + b64url(HMAC-SHA256(ticket_key, "v1." +
b64url(payload)))`` where the payload is the canonical JSON of ``{"v": 1, "id", "room",
"seats", "exp"}`` and ``ticket_key = HMAC-SHA256(agent key, "rivalis-fleet seat ticket
v1")``. This module only encodes and checks the signature and shape; whether the
ticket is for this room, unexpired and unused is the room's business.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from typing import Any, Final

from ._errors import FleetAgentError

__all__ = ["TicketClaims", "TicketError", "mint_ticket", "read_ticket", "ticket_key"]

_KEY_LABEL: Final = b"rivalis-fleet seat ticket v1"
_PREFIX: Final = "v1"
_MAX_TICKET: Final = 1024
_B64URL: Final = re.compile(r"[A-Za-z0-9_-]+")


class TicketError(FleetAgentError, ValueError):
    """A seat ticket that may not be accepted; ``str()`` says why (never the ticket)."""


@dataclass(frozen=True, slots=True)
class TicketClaims:
    """What a ticket says: reservation ``id``, the ``room`` id as its agent reports it,
    ``seats`` and its expiry ``exp`` (ms since the epoch)."""

    id: str
    room: str
    seats: int
    exp: int


def ticket_key(agent_key: str) -> bytes:
    """The HMAC key tickets are signed with, derived from an agent key."""
    return hmac.new(agent_key.encode(), _KEY_LABEL, hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    if _B64URL.fullmatch(text) is None:
        raise ValueError("not unpadded base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _signature(key: bytes, signed: str) -> bytes:
    return hmac.new(key, signed.encode("ascii"), hashlib.sha256).digest()


def mint_ticket(key: bytes, claims: TicketClaims) -> str:
    """The ticket for ``claims``, signed with ``key`` (:func:`ticket_key`)."""
    payload = json.dumps(
        {"v": 1, "id": claims.id, "room": claims.room, "seats": claims.seats, "exp": claims.exp},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    signed = f"{_PREFIX}.{_b64(payload.encode())}"
    return f"{signed}.{_b64(_signature(key, signed))}"


def read_ticket(key: bytes, ticket: str) -> TicketClaims:
    """The claims of a well-formed ticket signed with ``key``; :class:`TicketError`
    (``malformed ticket`` / ``bad signature``) otherwise."""
    if not isinstance(ticket, str) or len(ticket) > _MAX_TICKET:
        raise TicketError("malformed ticket")
    parts = ticket.split(".")
    if len(parts) != 3 or parts[0] != _PREFIX:
        raise TicketError("malformed ticket")
    try:
        payload = _unb64(parts[1])
        signature = _unb64(parts[2])
    except (ValueError, binascii.Error):
        raise TicketError("malformed ticket") from None
    claims = _claims(payload)  # the doc's order: shape first, then the signature
    expected = _signature(key, f"{parts[0]}.{parts[1]}")
    if not hmac.compare_digest(signature, expected):
        raise TicketError("bad signature")
    return claims


def _claims(payload: bytes) -> TicketClaims:
    try:
        doc: Any = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise TicketError("malformed ticket") from None
    if not isinstance(doc, dict) or doc.get("v") != 1:
        raise TicketError("malformed ticket")
    rid, room, seats, exp = doc.get("id"), doc.get("room"), doc.get("seats"), doc.get("exp")
    if not (isinstance(rid, str) and rid and isinstance(room, str) and room):
        raise TicketError("malformed ticket")
    return TicketClaims(rid, room, _count(seats), _count(exp))


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise TicketError("malformed ticket")
    return value
