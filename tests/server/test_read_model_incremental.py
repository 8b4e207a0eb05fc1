"""The read model's one-room updates and cached views equal a full rebuild every time."""

from __future__ import annotations

import random
from typing import Any

import pytest

from fleet_agent.wire import canonical_json, hash64_text
from fleet_server._instance import Instance, _full_changes
from fleet_server._read_model import Event, ReadModel
from fleet_server._snapshot import ReportedRoom, Snapshot

TYPES = ("match", "lobby")


class _RebuildingReadModel(ReadModel):
    """The reference: every overlay change reconciles the whole instance."""

    def add_provisional(self, instance: Instance, raw: str, room_type: str) -> list[Event]:
        if not instance.joined or instance.removed:
            return []
        instance.overlay_create(raw, room_type)
        return self._reconcile(instance, _full_changes(instance), whole=True)

    def hide(self, instance: Instance, raw: str) -> list[Event]:
        if not instance.joined or instance.removed:
            return []
        instance.overlay_destroy(raw)
        return self._reconcile(instance, _full_changes(instance), whole=True)


def _snapshot(rng: random.Random, uid: str, seq: int, rooms: dict[str, ReportedRoom]) -> Snapshot:
    return Snapshot(
        name=f"n-{uid}",
        process_uid=uid,
        agent_version="1",
        protocol_version=3,
        endpoint_url=rng.choice(("ws://a:1", "ws://b:2")),
        labels={"region": rng.choice(("eu", "us")), "quote": 'a"b\\'},
        max_connections=rng.choice((None, 100)),
        max_rooms=rng.choice((None, 50)),
        auto_create=True,
        room_types=TYPES,
        rooms=dict(rooms),
        status=rng.choice(("active", "active", "draining")),
        hash="h",
        seq=seq,
    )


def _random_rooms(rng: random.Random) -> dict[str, ReportedRoom]:
    return {
        f"{rng.choice(_ODD)}{rng.randrange(12)}": ReportedRoom(
            rng.choice((*TYPES, 'ty"pe\\\u00e9')),
            rng.randrange(0, 5),
            rng.random() < 0.3,
            rng.choice(("", "", '{"mode":"ranked"}', '{"a":[1,"\u00e9"],"b":null}')),
            rng.choice((None, None, 0, 10)),
            rng.random() < 0.2,
        )
        for _ in range(rng.randrange(0, 8))
    }


_ODD = ("r", "r", "r", 'q"', "b\\", "\u00e9", "t\x01", "s/")  # ids the JSON encoder escapes


def _view(read: ReadModel) -> Any:
    rooms = sorted((r.id, r.type, r.connections, r.instance_id, r.local) for r in read.room_infos())
    instances = [
        (i.id, i.connections, len(i.rooms), i.status, i.name) for i in read.instance_infos()
    ]
    return rooms, instances, read.state_hash, read.stats


_SPARSE: dict[str, Any] = {
    "metadata": {},
    "maxConnections": None,
    "locked": False,
    "reservedSeats": 0,
}


def _check_derived(read: ReadModel) -> None:
    entries = []
    for instance in sorted(read.joined, key=lambda i: i.id):
        entry = instance.info().to_dict()
        del entry["lastSyncAt"]
        for room in entry["rooms"]:  # the matchmaking fields are hashed only when set
            for key, unset in _SPARSE.items():
                if room[key] == unset:
                    del room[key]
        assert instance.hash_entry() == canonical_json(entry).encode()
        assert instance.connections == sum(r.connections for r in instance.rooms.values())
        entries.append(entry)
    assert read.state_hash == hash64_text(canonical_json(entries))
    for room in read.room_infos():
        assert read.room(room.id) == room


@pytest.mark.parametrize("seed", range(16))
def test_overlay_updates_match_a_full_rebuild(seed: int) -> None:
    rng = random.Random(seed)
    fast, slow = ReadModel(), _RebuildingReadModel()
    live: list[tuple[Instance, Instance]] = []
    serial = 0
    for seq in range(1, 301):
        action = rng.random()
        if action < 0.12 or not live:
            serial += 1
            pair = (fast.connect(f"i{serial}"), slow.connect(f"i{serial}"))
            live.append(pair)
            rooms = _random_rooms(rng)
            snapshot = _snapshot(rng, f"p{serial}", seq, rooms)
            got = fast.apply_snapshot(pair[0], snapshot, seq)
            want = slow.apply_snapshot(pair[1], snapshot, seq)
        else:
            a, b = rng.choice(live)
            if action < 0.4:
                raw, kind = f"{rng.choice(_ODD)}{rng.randrange(12)}", rng.choice(TYPES)
                got, want = fast.add_provisional(a, raw, kind), slow.add_provisional(b, raw, kind)
            elif action < 0.6:
                raw = rng.choice([*a.rooms, "r99"])
                got, want = fast.hide(a, raw), slow.hide(b, raw)
            elif action < 0.7:
                got, want = fast.touch(a, seq), slow.touch(b, seq)
            elif action < 0.8:
                assert a.snapshot is not None
                same = Snapshot(**{**_fields(a.snapshot), "seq": seq})
                got = fast.apply_snapshot(a, same, seq)
                want = slow.apply_snapshot(b, same, seq)
            elif action < 0.93:
                assert a.snapshot is not None
                changed = _snapshot(rng, a.snapshot.process_uid, seq, _random_rooms(rng))
                got = fast.apply_snapshot(a, changed, seq)
                want = slow.apply_snapshot(b, changed, seq)
            else:
                live.remove((a, b))
                got, want = fast.remove(a), slow.remove(b)
        assert [(k, getattr(v, "id", None)) for k, v in got] == [
            (k, getattr(v, "id", None)) for k, v in want
        ]
        assert _view(fast) == _view(slow)
        _check_derived(fast)
        fast.take_sync()
        slow.take_sync()


def _fields(snapshot: Snapshot) -> dict[str, Any]:
    return snapshot._asdict()


def test_an_unchanged_full_reply_rehashes_nothing() -> None:
    rng = random.Random(1)
    read = ReadModel()
    instance = read.connect("i1")
    snapshot = _snapshot(rng, "p1", 1, {"a": ReportedRoom("match", 2, False)})
    read.apply_snapshot(instance, snapshot, 1)
    assert read.take_sync() is not None
    text = instance.hash_entry()
    events = read.apply_snapshot(instance, Snapshot(**{**_fields(snapshot), "seq": 2}), 2)
    assert events == []
    assert not read.sync_due
    assert instance.hash_entry() is text
    assert instance.last_seq == 2
    assert instance.info().last_sync_at == 2
