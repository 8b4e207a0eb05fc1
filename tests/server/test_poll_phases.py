"""The spread of the links' poll ticks over the heartbeat (no connection needed)."""

from __future__ import annotations

from fleet_server._phases import BATCH, JOIN_BATCH, MAX_DELAY, PollPhases


def test_a_tick_is_never_moved_earlier_nor_more_than_the_window_later() -> None:
    phases = PollPhases(5.0)
    for i in range(2_000):
        due = 100.0 + (i // 64) * 0.064  # joins in batches, as a loaded loop handles them
        slot, when = phases.place(None, due)
        assert due <= when <= due + 5.0 * MAX_DELAY + 1e-9
        assert 0 <= slot < 500


def test_a_bunch_spreads_out_and_a_lone_link_keeps_its_time() -> None:
    phases = PollPhases(5.0)
    links = [phases.place(None, 200.0) for _ in range(100)]  # one loop iteration's joins
    assert phases.busiest() == JOIN_BATCH
    assert phases.place(None, 302.503) == (250, 302.503)  # an empty slot: unmoved
    for slot, _ in links:
        phases.release(slot)
    assert phases.links == 1


def test_a_short_heartbeat_has_no_window() -> None:
    phases = PollPhases(0.1)  # 10 slots: 5 % of them is none
    assert [phases.place(None, 7.0)[1] for _ in range(3)] == [7.0, 7.0, 7.0]


def test_a_placed_tick_stays_in_its_slot_up_to_the_wider_share() -> None:
    """Joins are spread JOIN_BATCH per slot; a link's later ticks move only out of a
    slot holding BATCH links, so a dense join does not leave ticks moving every
    heartbeat."""
    phases = PollPhases(5.0)
    placed = [phases.place(None, 100.0) for _ in range(300)]  # more than the window takes
    assert phases.busiest() > JOIN_BATCH  # the window could not take them all
    assert phases.busiest() < BATCH
    for slot, when in placed:
        assert phases.place(slot, when + 5.0) == (slot, when + 5.0)
