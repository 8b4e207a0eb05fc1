"""The orchestrator's metrics (CONTRACT §12, docs/tokens-and-metrics.md §2).

Each :class:`FleetMetrics` owns one ``prometheus_client`` :class:`CollectorRegistry`, so
several orchestrators in one process never share a series. Three kinds of figures:

- *gauges at scrape time*: instances by status, rooms by type, connections, reserved
  seats, event streams and their drops, leadership, loop lag — read from the read model
  and the event hub only when ``/metrics`` is scraped (:class:`_ScrapeCollector`);
- *hot-path tallies*: poll round trips, HTTP requests and settled commands, a list
  append or a dict increment per message, folded into histograms and counters by the
  loop-lag task's tick and at scrape time (before the registry reads them);
- *library metrics* for the rare events: kicks, evictions, auth failures.

The core's edges report through the :class:`Meter` protocol; :data:`NULL_METER` is the
second implementation, used when the metrics are off and by parts built alone (tests).
No label carries an id: routes are templates and agent-reported room types are capped.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from importlib import metadata
from typing import Final, Protocol

from prometheus_client import CollectorRegistry, Gauge
from prometheus_client import Counter as CounterMetric
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from ._models import RoomInfo
from ._tally import Tally

__all__ = [
    "MAX_GROUPS",
    "MAX_ROOM_TYPES",
    "NULL_METER",
    "OTHER_TYPE",
    "CapacityFigures",
    "CensusRow",
    "FleetMetrics",
    "LoopLag",
    "Meter",
    "NullMeter",
    "Tally",
    "package_version",
]

MAX_ROOM_TYPES: Final = 100  # room types reported by name; the rest add up under OTHER_TYPE
MAX_GROUPS: Final = 100  # capacity groups reported by name; the rest add up under OTHER_TYPE
OTHER_TYPE: Final = "_other"
STREAM_KINDS: Final = ("sse", "grpc", "webhook")
STATUSES: Final = ("active", "draining", "stale")
POLL_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
COMMAND_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

CapacityFigures = tuple[str, float, float]
"""One capacity group: the label's value (``""`` where absent), free room slots and
free connections (``inf`` where an active instance is unlimited)."""
Capacity = Callable[[], Iterable[CapacityFigures]]
CensusRow = tuple[str, str, int, tuple[RoomInfo, ...]]
"""One instance: its id, status (``active``, ``draining`` or ``stale``), connections and
rooms (the same tuple object while its rooms are unchanged)."""
Census = Callable[[], Iterable[CensusRow]]


def package_version() -> str:
    """The installed ``rivalis-fleet`` version (``fleet_build_info``)."""
    try:
        return metadata.version("rivalis-fleet")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a bare tree
        return "0.0.0"


class Meter(Protocol):
    """What the core's edges report; each call is cheap and never raises."""

    @property
    def poll_rtt(self) -> Callable[[float], None]:
        """Record one poll's round trip in seconds (the real one is a list's append)."""
        ...

    def http_request(self, route: str, code: int) -> None: ...
    def command(self, op: str, outcome: str, seconds: float) -> None: ...
    def kick(self, reason: str) -> None: ...
    def eviction(self) -> None: ...
    def auth_failure(self, audience: str) -> None: ...


def _ignore(seconds: float) -> None:
    pass


class NullMeter:
    """A meter that records nothing (metrics off, or a part built on its own)."""

    def __init__(self) -> None:
        self.poll_rtt: Final[Callable[[float], None]] = _ignore

    def http_request(self, route: str, code: int) -> None:
        pass

    def command(self, op: str, outcome: str, seconds: float) -> None:
        pass

    def kick(self, reason: str) -> None:
        pass

    def eviction(self) -> None:
        pass

    def auth_failure(self, audience: str) -> None:
        pass


NULL_METER: Final[Meter] = NullMeter()


class LoopLag:
    """How late a timer fires on the event loop: a task sleeps ``period_s`` over and
    over; :attr:`seconds` is the worst lateness of the last ``window_s``. ``on_tick``
    runs after every sleep."""

    def __init__(
        self,
        period_s: float = 0.5,
        window_s: float = 10.0,
        on_tick: Callable[[], None] = lambda: None,
    ) -> None:
        self._period = period_s
        self._on_tick = on_tick
        self._samples: deque[float] = deque(maxlen=max(1, int(window_s / period_s)))
        self._task: asyncio.Task[None] | None = None

    @property
    def seconds(self) -> float:
        return max(self._samples, default=0.0)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="loop-lag")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        period = self._period
        while True:
            started = time.monotonic()
            await asyncio.sleep(period)
            self._samples.append(max(0.0, time.monotonic() - started - period))
            self._on_tick()


class FleetMetrics:
    """One orchestrator's registry and the :class:`Meter` its edges report to."""

    def __init__(
        self,
        *,
        census: Census,
        streams: Callable[[str], int],
        dropped: Callable[[str], int],
        leads: Callable[[], bool],
        version: str,
        capacity: Capacity = lambda: (),
    ) -> None:
        self.registry: Final = CollectorRegistry()
        registry = self.registry
        self._rtt = Tally(POLL_BUCKETS)
        self.poll_rtt: Final = self._rtt.observe
        self._settled: list[tuple[str, str, float]] = []  # commands not folded in yet
        self.lag: Final = LoopLag(on_tick=self.fold)
        registry.register(_Folding(self.fold))  # first: the tallies are in when read
        # commands by (op, outcome), and their durations by op: plain tallies, so the
        # fold costs no Python call per command
        self.commands: Final[Counter[tuple[str, str]]] = Counter()
        self.durations: Final[dict[str, Tally]] = {}
        self._kicks = CounterMetric(
            "fleet_agent_kicks", "Agents kicked", ("reason",), registry=registry
        )
        self._evictions = CounterMetric(
            "fleet_evictions", "Agents evicted after missing 3 polls", registry=registry
        )
        self._auth_failures = CounterMetric(
            "fleet_auth_failures", "Failed authentications", ("audience",), registry=registry
        )
        build = Gauge("fleet_build_info", "The running version", ("version",), registry=registry)
        build.labels(version).set(1)
        self.http: Final[Counter[tuple[str, int]]] = Counter()
        registry.register(_ScrapeCollector(self, census, streams, dropped, leads))
        registry.register(_CapacityCollector(capacity))

    # --- the meter (and ``poll_rtt``, an attribute) ----------------------------------

    def http_request(self, route: str, code: int) -> None:
        self.http[route, code] += 1

    def command(self, op: str, outcome: str, seconds: float) -> None:
        self._settled.append((op, outcome, seconds))

    def fold(self) -> None:
        """Move the tallies into their histograms and counters (the loop-lag tick, and
        every scrape before the registry reads them)."""
        self._rtt.fold()
        settled, self._settled = self._settled, []
        if not settled:
            return
        commands, durations = self.commands, self.durations
        for op, outcome, seconds in settled:
            commands[op, outcome] += 1
            tally = durations.get(op)
            if tally is None:
                tally = durations[op] = Tally(COMMAND_BUCKETS)
            tally.observe(seconds)
        for tally in durations.values():
            tally.fold()

    def kick(self, reason: str) -> None:
        self._kicks.labels(reason).inc()

    def eviction(self) -> None:
        self._evictions.inc()

    def auth_failure(self, audience: str) -> None:
        self._auth_failures.labels(audience).inc()

    # --- what the scrape collector reads ------------------------------------------------

    def rtt_buckets(self) -> tuple[list[tuple[str, float]], float]:
        return self._rtt.buckets()


_Counted = tuple[tuple[RoomInfo, ...], dict[str, int], int]  # rooms, by type, reserved


class _Census:
    """Instances by status, rooms by type, connections and reserved seats; the room
    counts of an instance are kept while its rooms tuple is the same object."""

    def __init__(self) -> None:
        self._rooms: dict[str, _Counted] = {}

    def count(self, rows: Iterable[CensusRow]) -> tuple[dict[str, int], Counter[str], int, int]:
        statuses = dict.fromkeys(STATUSES, 0)
        types: Counter[str] = Counter()
        connections = reserved = 0
        cache: dict[str, _Counted] = {}
        previous = self._rooms
        for instance_id, status, instance_connections, rooms in rows:
            statuses[status] += 1
            connections += instance_connections
            entry = previous.get(instance_id)
            if entry is None or entry[0] is not rooms:
                entry = (rooms, _by_type(rooms), sum(room.reserved_seats for room in rooms))
            cache[instance_id] = entry
            for room_type, count in entry[1].items():
                types[room_type] += count
            reserved += entry[2]
        self._rooms = cache
        return statuses, types, connections, reserved


def _by_type(rooms: tuple[RoomInfo, ...]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for room in rooms:
        counts[room.type] = counts.get(room.type, 0) + 1
    return counts


def capped(types: Counter[str], limit: int = MAX_ROOM_TYPES) -> Iterator[tuple[str, int]]:
    """The ``limit`` types with the most rooms by name (ties: by name), then the rest
    summed under :data:`OTHER_TYPE`."""
    ranked = sorted(types.items(), key=lambda item: (-item[1], item[0]))
    yield from ranked[:limit]
    if len(ranked) > limit:
        yield OTHER_TYPE, sum(count for _, count in ranked[limit:])


class _Folding:
    """A collector of no series that folds the tallies when the registry is read."""

    def __init__(self, fold: Callable[[], None]) -> None:
        self._fold = fold

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        self._fold()
        return iter(())


class _ScrapeCollector:
    """Everything computed when ``/metrics`` is read."""

    def __init__(
        self,
        metrics: FleetMetrics,
        census: Census,
        streams: Callable[[str], int],
        dropped: Callable[[str], int],
        leads: Callable[[], bool],
    ) -> None:
        self._metrics = metrics
        self._census_of = census
        self._census = _Census()
        self._streams = streams
        self._dropped = dropped
        self._leads = leads

    def describe(self) -> list[Metric]:
        return []  # names are not checked against other collectors; nothing to compute

    def collect(self) -> Iterator[Metric]:
        statuses, types, connections, reserved = self._census.count(self._census_of())
        yield _labelled_gauge("fleet_instances", "Instances by status", "status", statuses.items())
        yield _labelled_gauge("fleet_rooms", "Rooms by type", "type", capped(types))
        yield GaugeMetricFamily("fleet_connections", "Connections in all rooms", connections)
        yield GaugeMetricFamily("fleet_reserved_seats", "Seats held by reservations", reserved)
        rtt = HistogramMetricFamily("fleet_poll_rtt_seconds", "From a poll to its State")
        buckets, total = self._metrics.rtt_buckets()
        rtt.add_metric([], buckets, total)
        yield rtt
        yield from self._commands()
        http = CounterMetricFamily(
            "fleet_http_requests", "HTTP requests answered", labels=("route", "code")
        )
        for (route, code), count in sorted(self._metrics.http.items()):
            http.add_metric([route, str(code)], count)
        yield http
        kinds = [(kind, self._streams(kind)) for kind in STREAM_KINDS]
        yield _labelled_gauge("fleet_event_streams", "Open event streams", "kind", kinds)
        drops = CounterMetricFamily(
            "fleet_events_dropped",
            "Events dropped: queued for a stream cut off for falling behind (sse, grpc), or "
            "the oldest of a full webhook queue (webhook)",
            labels=("kind",),
        )
        for kind in STREAM_KINDS:
            drops.add_metric([kind], self._dropped(kind))
        yield drops
        yield GaugeMetricFamily(
            "fleet_event_loop_lag_seconds",
            "The worst event-loop lag of the last 10 s",
            self._metrics.lag.seconds,
        )
        yield GaugeMetricFamily("fleet_leader", "1 when this node leads", int(self._leads()))

    def _commands(self) -> Iterator[Metric]:
        metrics = self._metrics
        counts = CounterMetricFamily("fleet_commands", "Commands settled", labels=("op", "outcome"))
        for (op, outcome), count in sorted(metrics.commands.items()):
            counts.add_metric([op, outcome], count)
        yield counts
        durations = HistogramMetricFamily(
            "fleet_command_duration_seconds",
            "From a command's start to its settling",
            labels=("op",),
        )
        for op, tally in sorted(metrics.durations.items()):
            buckets, total = tally.buckets()
            durations.add_metric([op], buckets, total)
        yield durations


class _CapacityCollector:
    """``fleet_capacity_free_room_slots{group}`` and ``…_free_connections{group}``
    (CONTRACT §14), grouped by the ``capacity_label`` option; at most
    :data:`MAX_GROUPS` groups by name (the most room slots first), the rest summed under
    :data:`OTHER_TYPE`."""

    def __init__(self, capacity: Capacity) -> None:
        self._capacity = capacity

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        rows = sorted(self._capacity(), key=lambda row: (-row[1], row[0]))
        if len(rows) > MAX_GROUPS:
            rest = rows[MAX_GROUPS:]
            rows = [
                *rows[:MAX_GROUPS],
                (OTHER_TYPE, sum(r[1] for r in rest), sum(r[2] for r in rest)),
            ]
        slots = GaugeMetricFamily(
            "fleet_capacity_free_room_slots",
            "Free room slots of active instances (+Inf: unlimited)",
            labels=("group",),
        )
        connections = GaugeMetricFamily(
            "fleet_capacity_free_connections",
            "Free connections of active instances (+Inf: unlimited)",
            labels=("group",),
        )
        for group, free_slots, free_connections in rows:
            slots.add_metric([group], free_slots)
            connections.add_metric([group], free_connections)
        yield slots
        yield connections


def _labelled_gauge(
    name: str, documentation: str, label: str, values: Iterable[tuple[str, int]]
) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation, labels=(label,))
    for value, count in values:
        family.add_metric([value], count)
    return family
