"""Choosing an instance for a new room (SPEC §6). Pure: no I/O, no awaiting."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Final, Literal, cast, get_args

from ._errors import ErrorCode, FleetError
from ._instance import Instance, hosts
from ._read_model import ReadModel
from ._selectors import MAX_SELECTORS, Selector, selectors_from_json

__all__ = [
    "DEFAULT",
    "Placement",
    "PlacementStrategy",
    "ValidationError",
    "check_pin",
    "choose",
]

PlacementStrategy = Literal["least-loaded", "most-loaded", "random"]
STRATEGIES: Final = frozenset(get_args(PlacementStrategy))


class ValidationError(FleetError, ValueError):
    """Invalid input: a :class:`FleetError` with code ``VALIDATION`` that is also a ValueError."""

    def __init__(self, message: str) -> None:
        super().__init__(ErrorCode.VALIDATION, message)


@dataclass(frozen=True, slots=True)
class Placement:
    """Where a new room may go: a pin (``instance_id`` or ``process_uid``) or a strategy
    over the instances that match ``labels``, or the first of ``selectors`` (tried in
    order) that has a candidate. A selector is a :class:`Selector` or its JSON form,
    ``{"labels": {...}, "expressions": [{"key", "op", "values"}]}``."""

    instance_id: str | None = None
    process_uid: str | None = None
    strategy: PlacementStrategy = "least-loaded"
    labels: Mapping[str, str] = field(default_factory=dict)
    force: bool = False
    selectors: Sequence[Selector | Mapping[str, Any]] = ()  # stored as Selectors

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValidationError("placement strategy must be least-loaded, most-loaded or random")
        if self.instance_id is not None and self.process_uid is not None:
            raise ValidationError("placement takes instance_id or process_uid, not both")
        for name in ("instance_id", "process_uid"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise ValidationError(f"placement {name} must be a non-empty string")
        if not isinstance(self.labels, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in self.labels.items()
        ):
            raise ValidationError("placement labels must map strings to strings")
        if not isinstance(self.force, bool):
            raise ValidationError("placement force must be a boolean")
        object.__setattr__(self, "selectors", _selectors(self.selectors))
        if self.selectors and self.labels:
            raise ValidationError("placement takes labels or selectors, not both")

    def predicates(self) -> tuple[Selector, ...]:
        """The selectors to try in order: ``labels`` alone is the one-selector shorthand."""
        if self.selectors:
            return cast(tuple[Selector, ...], self.selectors)
        return (Selector(labels=self.labels),) if self.labels else _ANY


def _selectors(value: object) -> tuple[Selector, ...]:
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise ValidationError("placement selectors must be a list")
    items = list(value)
    if len(items) > MAX_SELECTORS:
        raise ValidationError(f"placement takes at most {MAX_SELECTORS} selectors")
    if all(isinstance(item, Selector) for item in items):
        return tuple(items)
    return selectors_from_json(
        [item if not isinstance(item, Selector) else _selector_json(item) for item in items]
    )


def _selector_json(selector: Selector) -> dict[str, object]:
    return {
        "labels": dict(selector.labels),
        "expressions": [
            {"key": e.key, "op": e.op, "values": list(e.values)} for e in selector.expressions
        ],
    }


_ANY: Final = (Selector(),)  # the one selector of a placement without labels
DEFAULT: Final = Placement()


def check_pin(instance: Instance, force: bool) -> None:
    """Raise unless a pinned create may go to ``instance``."""
    if not force and instance.effective_status == "draining":
        raise FleetError(ErrorCode.INSTANCE_DRAINING, f"instance {instance.id} is draining")
    if not force and instance.stale:
        raise FleetError(ErrorCode.INSTANCE_DISCONNECTED, f"instance {instance.id} is stale")
    snapshot = instance.snapshot
    if snapshot is None or not snapshot.auto_create:
        raise FleetError(ErrorCode.NO_CANDIDATE, f"instance {instance.id} has auto_create off")


def choose(
    read: ReadModel,
    room_type: str,
    placement: Placement,
    rng: random.Random,
) -> Instance:
    """The instance a strategy placement picks; ``NO_CANDIDATE`` if none.

    Least- and most-loaded use the per-type index; ``random`` and types whose
    members mix declared and unlimited capacities scan the fleet in join order.
    """
    for selector in placement.predicates():
        picked = _choose_one(read, room_type, placement, selector, rng)
        if picked is not None:
            return picked
    raise FleetError(ErrorCode.NO_CANDIDATE, f"no instance can host a {room_type!r} room")


def _choose_one(
    read: ReadModel, room_type: str, placement: Placement, selector: Selector, rng: random.Random
) -> Instance | None:
    labels, expressions = selector.labels, selector.expressions
    fits: Callable[[Instance], bool]
    if expressions:

        def fits(instance: Instance) -> bool:
            if not hosts(room_type, labels, instance):
                return False
            snapshot = instance.snapshot
            return snapshot is not None and all(e.holds(snapshot.labels) for e in expressions)

    else:  # one Python frame per candidate (the tie runs check up to 64), no keywords
        fits = partial(hosts, room_type, labels)

    if placement.strategy != "random" and read.index.ordered(room_type):
        return read.index.choose(room_type, placement.strategy == "most-loaded", fits, rng)
    return _scan(read.joined, fits, placement, rng)


def _scan(
    instances: Iterable[Instance],
    fits: Callable[[Instance], bool],
    placement: Placement,
    rng: random.Random,
) -> Instance | None:
    candidates = [i for i in instances if fits(i)]
    if not candidates:
        return None
    if placement.strategy == "random" or len(candidates) == 1:
        return candidates[0] if len(candidates) == 1 else rng.choice(candidates)
    snaps = [c.snapshot for c in candidates]
    by_capacity = all(s is not None and s.max_connections is not None for s in snaps)
    rooms_by_capacity = all(s is not None and s.max_rooms is not None for s in snaps)
    sign = 1 if placement.strategy == "least-loaded" else -1
    best: list[Instance] = []
    best_key: tuple[float, float] | None = None
    for candidate, snap in zip(candidates, snaps, strict=True):
        assert snap is not None
        load: float = candidate.connections
        if by_capacity:
            assert snap.max_connections
            load = load / snap.max_connections
        rooms: float = candidate.room_load
        if rooms_by_capacity:
            assert snap.max_rooms
            rooms = rooms / snap.max_rooms
        key = (sign * load, sign * rooms)
        if best_key is None or key < best_key:
            best_key, best = key, [candidate]
        elif key == best_key:
            best.append(candidate)
    return best[0] if len(best) == 1 else rng.choice(best)
