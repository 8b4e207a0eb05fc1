"""Type-checked only (mypy --strict, never run): pins how ``fleet_client`` is called."""

from __future__ import annotations

from fleet_client import (
    CapacityRow,
    ClusterInfo,
    FleetClient,
    FleetClientError,
    FleetEvent,
    FleetStats,
    InstanceInfo,
    NoCandidate,
    NotReady,
    OutcomeUnknown,
    RoomExists,
    RoomInfo,
    SeatGrant,
)


async def matchmaker(key: str) -> None:
    async with FleetClient(["http://a:7350", "http://b:7350"], token_or_key=key) as fleet:
        stats: FleetStats = await fleet.stats()
        instances: list[InstanceInfo] = await fleet.instances()
        rooms: list[RoomInfo] = await fleet.rooms(type="match", labels={"region": "eu"})
        free: list[RoomInfo] = await fleet.rooms(metadata={"mode": "ranked"}, min_free_seats=2)
        one: RoomInfo = await fleet.get_room(rooms[0].id)
        made: RoomInfo = await fleet.create_room(
            "match", options={"map": "dust"}, placement={"labels": {"region": "eu"}}
        )
        named: RoomInfo = await fleet.create_room("match", room_id="m-1")
        await fleet.destroy_room(named.id)
        await fleet.drain(instances[0].id)
        await fleet.undrain(instances[0].id)
        grant: SeatGrant = await fleet.reserve_seats(
            "match", 2, metadata={"mode": "ranked"}, create={"options": {"mode": "ranked"}}
        )
        ticket: str = grant.reservation.ticket
        await fleet.release_seats(grant.reservation.id)
        rows: list[CapacityRow] = await fleet.capacity(group_by="region", type="match")
        cluster: ClusterInfo = await fleet.cluster()
        print(stats.rooms, free, one.endpoint_url, made.id, ticket, rows, cluster.role)
        async for event in fleet.watch():
            seen: FleetEvent = event
            if isinstance(seen.data, RoomInfo) and seen.type == "room:create":
                print(seen.data.id)
            if seen.type == "sync" and seen.resync:
                break


async def errors(key: str) -> None:
    async with FleetClient(["127.0.0.1:7351"], token_or_key=key, transport="grpc") as fleet:
        try:
            await fleet.create_room("match", room_id="m-2")
        except RoomExists as exc:
            code: str = exc.code
            print(code)
        except (NoCandidate, NotReady) as exc:
            wait: float | None = exc.retry_after
            retry: bool = exc.retryable
            print(wait, retry)
        except OutcomeUnknown as exc:
            print(exc.message)
        except FleetClientError as exc:
            print(exc.code)
