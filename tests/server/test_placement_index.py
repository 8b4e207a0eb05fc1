"""The per-type placement index picks exactly what the plain fleet scan picks."""

from __future__ import annotations

import random
from functools import partial
from typing import Any

import pytest

from fleet_server import ErrorCode, FleetError, Placement
from fleet_server import _placement_index as placement_index
from fleet_server._instance import Instance, hosts
from fleet_server._placement import _scan, choose
from fleet_server._placement_index import _EXACT_TIES
from fleet_server._read_model import ReadModel
from fleet_server._snapshot import ReportedRoom, Snapshot

TYPES = ("match", "lobby", "duel")


def _snapshot(rng: random.Random, seq: int, capacity: str) -> Snapshot:
    rooms = {
        f"r{n}": ReportedRoom(rng.choice(TYPES), rng.randrange(0, 6), rng.random() < 0.3)
        for n in range(rng.randrange(0, 6))
    }
    declared = {"declared": True, "unlimited": False}.get(capacity, rng.random() < 0.5)
    return Snapshot(
        name="n",
        process_uid=f"p_{rng.randrange(1000)}",
        agent_version="1",
        protocol_version=3,
        endpoint_url="ws://x",
        labels={"region": rng.choice(("eu", "us"))},
        max_connections=rng.choice((10, 20, 30)) if declared else None,
        max_rooms=rng.choice((4, 6, 8)) if declared else None,
        auto_create=rng.random() < 0.9,
        room_types=tuple(sorted(set(rng.sample(TYPES, rng.randrange(1, 4))))),
        rooms=rooms,
        status="draining" if rng.random() < 0.1 else "active",
        hash="h",
        seq=seq,
    )


class _Every(random.Random):
    """An RNG whose ``choice`` is every option: the scan's whole set of best candidates."""

    def choice(self, seq: Any) -> Any:
        return tuple(seq)


def _best(read: ReadModel, placement: Placement) -> set[str]:
    """The ids of every instance the scan may pick (the best fitting ones)."""
    fits = partial(hosts, "match", placement.labels)
    picked: Any = _scan(read.joined, fits, placement, _Every())
    if picked is None:
        return {"NO_CANDIDATE"}
    return {i.id for i in picked} if isinstance(picked, tuple) else {picked.id}


def _pick(read: ReadModel, placement: Placement, seed: int, indexed: bool) -> str:
    rng = random.Random(seed)
    try:
        if indexed:
            return choose(read, "match", placement, rng).id
        labels = placement.labels
        picked = _scan(read.joined, partial(hosts, "match", labels), placement, rng)
        return picked.id if picked is not None else "NO_CANDIDATE"
    except FleetError as exc:
        assert exc.code is ErrorCode.NO_CANDIDATE
        return "NO_CANDIDATE"


@pytest.mark.parametrize("exact_ties", [_EXACT_TIES, 1])
@pytest.mark.parametrize("capacity", ["declared", "unlimited", "mixed"])
@pytest.mark.parametrize("seed", range(12))
def test_index_agrees_with_the_scan_through_random_fleet_changes(
    seed: int, capacity: str, exact_ties: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(placement_index, "_EXACT_TIES", exact_ties)  # 1: draw every run
    rng = random.Random(seed)
    read = ReadModel()
    live: list[Instance] = []
    seq = 0
    long_runs = 0
    for step in range(400):
        action = rng.random()
        if action < 0.15 or not live:
            instance = read.connect(f"i_{step:04d}")
            seq += 1
            read.apply_snapshot(instance, _snapshot(rng, seq, capacity), step)
            live.append(instance)
        elif action < 0.45:
            instance = rng.choice(live)
            seq += 1
            read.apply_snapshot(instance, _snapshot(rng, seq, capacity), step)
        elif action < 0.55:
            instance = rng.choice(live)
            instance.create_started()
            read.index.refresh(instance)
        elif action < 0.6:
            instance = rng.choice(live)
            read.hold(instance, f"held{step}")
        elif action < 0.65:
            instance = rng.choice(live)
            instance.mark_fresh() if instance.stale else instance.mark_stale()
        elif action < 0.7:
            instance = rng.choice(live)
            read.add_provisional(instance, f"new{step}", "match")
        elif action < 0.75:
            instance = live.pop(rng.randrange(len(live)))
            read.remove(instance)
        for strategy in ("least-loaded", "most-loaded"):
            for labels in ({}, {"region": "eu"}):
                placement = Placement(strategy=strategy, labels=labels)
                best = _best(read, placement)
                picked = _pick(read, placement, step, indexed=True)
                assert picked in best, (step, strategy)
                if len(best) <= exact_ties:  # a short tie run is drawn as the scan draws
                    assert picked == _pick(read, placement, step, indexed=False), step
                else:
                    long_runs += 1
    assert long_runs > 0 or exact_ties > 1 or capacity == "mixed"  # the draw was exercised


def test_large_tie_runs_are_drawn_uniformly() -> None:
    read = ReadModel()
    for n in range(200):
        instance = read.connect(f"i_{n:03d}")
        snap = Snapshot(
            name="n", process_uid=f"p_{n}", agent_version="1", protocol_version=3,
            endpoint_url="ws://x", labels={}, max_connections=None, max_rooms=None,
            auto_create=True, room_types=("match",), rooms={}, status="active", hash="h",
            seq=1,
        )  # fmt: skip
        read.apply_snapshot(instance, snap, 0)
    rng = random.Random(7)
    counts: dict[str, int] = {}
    for _ in range(4000):
        picked = choose(read, "match", Placement(), rng)
        counts[picked.id] = counts.get(picked.id, 0) + 1
    assert len(counts) == 200  # every tied instance gets picked
    assert max(counts.values()) < 60  # ~20 expected each; no favourite
