"""Seat tickets and the seat ledger (docs/matchmaking.md §4): the codec against the doc's
vector, and each reason a ticket is refused."""

from __future__ import annotations

import pytest

from fleet_agent import SeatReservation, TicketError
from fleet_agent._seats import SeatLedger
from fleet_agent._tickets import TicketClaims, mint_ticket, read_ticket, ticket_key
from fleet_agent.wire import MAX_ACCEPTED_RESERVATIONS

KEY = "agent-key-0123456789abcdef"
DOC_TICKET = (
    "v1.eyJleHAiOjE3NjQ4NDQ4NjAwMDAsImlkIjoic19hYmMiLCJyb29tIjoicjEiLCJzZWF0cyI6MiwidiI6MX0"
    ".aUeTyrTrVmapFMcFY7QEkBOpEeVw779nCaasf9zTVRM"
)
NOW_MS = 1_764_844_800_000


class Clock:
    """A settable wall clock in seconds."""

    def __init__(self, ms: int = NOW_MS) -> None:
        self.ms = ms

    def __call__(self) -> float:
        return self.ms / 1000


def ticket(
    room: str = "r1", rid: str = "s_1", *, exp: int = NOW_MS + 30_000, key: str = KEY
) -> str:
    return mint_ticket(ticket_key(key), TicketClaims(rid, room, 2, exp))


def tampered() -> str:
    """A valid ticket's signature over another payload (more seats)."""
    signed = ticket().split(".")
    other = mint_ticket(ticket_key(KEY), TicketClaims("s_1", "r1", 9, NOW_MS + 30_000))
    return ".".join([signed[0], other.split(".")[1], signed[2]])


def test_the_doc_vector() -> None:
    key = ticket_key(KEY)
    assert key.hex() == "7e06345a08dc5e795ead4c024ae2e1c913c02eec1ec648a735b8b71b25e02907"
    claims = TicketClaims("s_abc", "r1", 2, 1_764_844_860_000)
    assert mint_ticket(key, claims) == DOC_TICKET
    assert read_ticket(key, DOC_TICKET) == claims


def test_an_accepted_ticket_gives_its_reservation_and_is_reported_until_it_expires() -> None:
    clock = Clock()
    ledger = SeatLedger(KEY, clock=clock)
    assert ledger.accepted() == ()
    first = ledger.accept("r1", ticket(rid="s_2", exp=NOW_MS + 2_000))
    assert first == SeatReservation("s_2", "r1", 2, NOW_MS + 2_000)
    ledger.accept("r1", ticket(rid="s_1", exp=NOW_MS + 1_000))
    ids = ledger.accepted()
    assert ids == ("s_1", "s_2")
    assert ledger.accepted() is ids  # the same tuple while nothing changes
    clock.ms = NOW_MS + 1_000
    assert ledger.accepted() == ("s_2",)
    clock.ms = NOW_MS + 2_000
    assert ledger.accepted() == () and len(ledger) == 0


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda: ticket(key="another-agent-key"), "bad signature"),
        (lambda: tampered(), "bad signature"),
        (lambda: ticket(room="r2"), "ticket for another room"),
        (lambda: ticket(exp=NOW_MS), "expired ticket"),
        (lambda: ticket(exp=NOW_MS - 1), "expired ticket"),
        (lambda: "", "malformed ticket"),
        (lambda: "v2." + ticket()[3:], "malformed ticket"),
        (lambda: "v1.e30.e30.e30", "malformed ticket"),
        (lambda: "v1.!!!.abc", "malformed ticket"),
        (lambda: "v1.e30=.abc", "malformed ticket"),
        (lambda: mint_ticket(ticket_key(KEY), TicketClaims("", "r1", 1, NOW_MS + 1)), "malformed"),
        (lambda: ticket(rid="s" * 65), "malformed ticket"),
        (lambda: "v1." + "A" * 2000 + ".x", "malformed ticket"),
    ],
)
def test_a_refused_ticket_says_why_and_records_nothing(make: object, reason: str) -> None:
    ledger = SeatLedger(KEY, clock=Clock())
    assert callable(make)
    with pytest.raises(TicketError, match=reason):
        ledger.accept("r1", make())
    assert ledger.accepted() == () and len(ledger) == 0


def test_a_payload_that_is_not_a_ticket_object_is_malformed() -> None:
    import base64
    import hashlib
    import hmac

    key = ticket_key(KEY)
    for payload in (b"[1]", b'{"v":2,"id":"s","room":"r1","seats":1,"exp":9}', b"\xff", b"{"):
        body = base64.urlsafe_b64encode(payload).rstrip(b"=").decode()
        signed = f"v1.{body}"
        sig = hmac.new(key, signed.encode(), hashlib.sha256).digest()
        forged = f"{signed}.{base64.urlsafe_b64encode(sig).rstrip(b'=').decode()}"
        with pytest.raises(TicketError, match="malformed ticket"):
            SeatLedger(KEY, clock=Clock()).accept("r1", forged)


def test_a_ticket_is_accepted_once() -> None:
    ledger = SeatLedger(KEY, clock=Clock())
    one = ticket()
    ledger.accept("r1", one)
    with pytest.raises(TicketError, match="ticket already used"):
        ledger.accept("r1", one)
    assert ledger.accepted() == ("s_1",)


def test_the_checks_run_in_the_documented_order() -> None:
    """Shape before signature, signature before room, room before expiry, expiry before
    reuse."""
    clock = Clock()
    ledger = SeatLedger(KEY, clock=clock)
    not_json = "v1.bm90LWpzb24." + ticket().split(".")[2]  # "not-json", signed for another
    with pytest.raises(TicketError, match="malformed ticket"):
        ledger.accept("r1", not_json)
    ledger.accept("r1", ticket(exp=NOW_MS + 10))
    with pytest.raises(TicketError, match="bad signature"):
        ledger.accept("r1", ticket(room="r2", exp=NOW_MS - 1, key="other"))
    with pytest.raises(TicketError, match="another room"):
        ledger.accept("r1", ticket(room="r2", exp=NOW_MS - 1))
    clock.ms = NOW_MS + 10
    with pytest.raises(TicketError, match="expired"):
        ledger.accept("r1", ticket(exp=NOW_MS + 10))


def test_the_ledger_is_bounded_by_the_wire_limit() -> None:
    ledger = SeatLedger(KEY, clock=Clock())
    for i in range(MAX_ACCEPTED_RESERVATIONS):
        ledger.accept("r1", ticket(rid=f"s_{i}"))
    with pytest.raises(TicketError, match="too many accepted reservations"):
        ledger.accept("r1", ticket(rid="s_next"))
    assert len(ledger.accepted()) == MAX_ACCEPTED_RESERVATIONS
