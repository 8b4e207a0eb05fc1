"""The spread of the links' poll ticks over the heartbeat (no connection needed)."""

from __future__ import annotations

from fleet_server._phases import (
    BATCH,
    JOIN_BATCH,
    MAX_DELAY,
    MAX_STEP,
    SETTLE_LIMIT,
    SETTLE_TICKS,
    SLOT_S,
    PollPhases,
)


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
    """Joins are spread JOIN_BATCH per slot; a settled link's ticks move only out of a
    slot holding BATCH links (or twice the mean), so a dense join does not leave ticks
    moving every heartbeat."""
    phases = PollPhases(5.0)
    placed = [phases.place(None, 100.0) for _ in range(300)]  # more than the window takes
    assert phases.busiest() > JOIN_BATCH  # the window could not take them all
    assert phases.busiest() < BATCH
    for slot, when in placed:
        assert phases.place(slot, when + 5.0) == (slot, when + 5.0)


def _beat(
    phases: PollPhases, ticks: list[tuple[int, float]], interval: float, settling: bool
) -> tuple[list[tuple[int, float]], int]:
    """Every link's next tick, in the order they fall due; and how many were moved."""
    placed, moved = [], 0
    for slot, when in sorted(ticks, key=lambda tick: tick[1]):
        due = when + interval
        new_slot, new_when = phases.place(slot, due, settling)
        assert due <= new_when <= due + MAX_STEP * SLOT_S + 1e-9  # later, by a few slots
        moved += new_when > due
        placed.append((new_slot, new_when))
    return placed, moved


def test_a_dense_join_settles_over_the_heartbeat_then_stays() -> None:
    """100 links that joined in one loop iteration of a 1 s heartbeat tick in slots of
    at most JOIN_BATCH; while they settle, the bunch flows forward until no slot holds
    more than SETTLE_LIMIT; then nothing moves."""
    phases = PollPhases(1.0)
    ticks = [phases.place(None, 10.0037) for _ in range(100)]
    assert phases.busiest() > SETTLE_LIMIT
    for _ in range(SETTLE_TICKS - 1):
        ticks, _moved = _beat(phases, ticks, 1.0, settling=True)
    assert phases.busiest() <= SETTLE_LIMIT
    for _ in range(3):
        ticks, moved = _beat(phases, ticks, 1.0, settling=False)
        assert moved == 0
    slots = sorted(slot for slot, _ in ticks)
    assert len(set(slots)) >= 50


def test_settling_ticks_of_an_even_fleet_do_not_move() -> None:
    """Links that joined spread out (one per 10 ms over a 5 s heartbeat) are already
    below the settling share: no tick moves."""
    phases = PollPhases(5.0)
    ticks = [phases.place(None, 5.0 + i * 0.01 + 0.0031) for i in range(1_000)]
    ticks, moved = _beat(phases, ticks, 5.0, settling=True)
    assert moved == 0
