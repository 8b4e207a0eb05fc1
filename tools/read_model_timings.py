"""Micro-timings of the read model's per-field hot paths, in µs per call.

``python tools/read_model_timings.py [ROUNDS]`` builds one instance of 20 rooms and one
of 2,000 in a bare :class:`~fleet_server._read_model.ReadModel` and times the views the
field table generates (stateHash entries, ``to_dict()``, gRPC messages, infos) and the
per-change paths around them. Each figure is the minimum over ``ROUNDS`` rounds of a few
repeats, in CPU time, so other work on the machine disturbs it as little as it can;
compare two trees by running both on one machine, interleaved.
"""

from __future__ import annotations

import logging
import sys
import time
import timeit
from collections.abc import Callable
from pathlib import Path

if __package__ in (None, ""):  # run as a script: python tools/read_model_timings.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fleet_server._instance import Instance
from fleet_server._read_model import ReadModel
from fleet_server._snapshot import ReportedRoom, Snapshot
from gateway._grpc_messages import instance_message, room_message

Case = tuple[Callable[[], object], int]  # the call, and how many calls per repeat


def snapshot(rooms: int, seq: int = 1, bump: int = 0) -> Snapshot:
    return Snapshot(
        name="eu-1",
        process_uid="p_0123456789abcdef01234567",
        agent_version="1.2.3",
        protocol_version=3,
        endpoint_url="wss://eu-1.example.com:7000/game",
        labels={"region": "eu", "tier": "gold"},
        max_connections=5000,
        max_rooms=None,
        auto_create=True,
        room_types=("lobby", "match"),
        rooms={
            f"room-{n:05d}": ReportedRoom("match" if n % 3 else "lobby", n % 17 + bump, n % 5 == 0)
            for n in range(rooms)
        },
        status="active",
        hash="h",
        seq=seq,
    )


def joined(rooms: int) -> tuple[ReadModel, Instance]:
    read = ReadModel()
    instance = read.connect("i_abcdefghijklmnop")
    read.apply_snapshot(instance, snapshot(rooms), 1_700_000_000_000)
    return read, instance


def cases() -> dict[str, Case]:
    out: dict[str, Case] = {}
    for rooms, number in ((20, 1000), (2000, 10)):
        read, instance = joined(rooms)

        def entry(read: ReadModel = read, instance: Instance = instance) -> None:
            read._dirty(instance)  # what every semantic change does first
            instance.hash_entry()

        out[f"Instance.hash_entry() {rooms} rooms"] = (entry, number)
    read, instance = joined(20)
    info = instance.info()
    room = info.rooms[0]
    out["InstanceInfo.to_dict() 20 rooms"] = (info.to_dict, 1000)
    out["RoomInfo.to_dict()"] = (room.to_dict, 20000)
    out["instance_message() 20 rooms"] = (lambda: instance_message(info), 500)
    out["room_message()"] = (lambda: room_message(room), 10000)

    def rebuild() -> None:
        read._dirty(instance)
        instance.reset_rooms()
        instance.info()

    out["Instance.info() rebuild 20 rooms"] = (rebuild, 1000)
    out["ReadModel.touch() (hash-only reply)"] = (lambda: read.touch(instance, 5), 20000)

    def overlay() -> None:
        read.add_provisional(instance, "extra", "match")
        read.hide(instance, "extra")

    out["add_provisional() + hide() one room"] = (overlay, 1000)
    big, many = joined(2000)
    replies = [snapshot(2000, bump=0), snapshot(2000, bump=1)]
    seq = [1]

    def churn() -> None:
        seq[0] += 1
        reply = replies[seq[0] % 2]._replace(seq=seq[0])
        big.apply_snapshot(many, reply, 5)

    out["apply_snapshot() 2000 rooms, all changed"] = (churn, 5)
    out["join of a 2000-room instance"] = (lambda: joined(2000), 3)
    return out


def main() -> None:
    logging.disable(logging.WARNING)
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 8
    table = cases()
    best = dict.fromkeys(table, float("inf"))
    for _ in range(rounds):
        for name, (call, number) in table.items():
            runs = timeit.repeat(call, number=number, repeat=3, timer=time.process_time)
            best[name] = min(best[name], min(runs) / number * 1e6)
    for name, micros in best.items():
        print(f"{name:42s} {micros:10.3f} µs")


if __name__ == "__main__":
    main()
