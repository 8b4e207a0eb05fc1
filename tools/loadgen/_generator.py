"""The load generator's master: spawns worker processes, steers them, merges reports."""

from __future__ import annotations

import contextlib
import multiprocessing
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from types import TracebackType
from typing import Any, Self, cast

from ._agent import Behaviour, ReplyPolicy
from ._histogram import Histogram
from ._worker import WorkerConfig, worker_main

__all__ = ["AGENT_KEY", "LoadConfig", "LoadGenerator", "LoadReport"]

AGENT_KEY = "loadgen-agent-key-0123456789abcdef"


@dataclass(frozen=True)
class LoadConfig:
    """What to simulate. Fractions pick misbehaving agents (the rest are ``ok``). ``url``
    is one agent URL or the URLs of a cluster's nodes, dialled in order as the real agent
    does (following a standby's leader hint). ``room_max_connections`` and
    ``room_metadata`` make every room, created ones too, report seats and metadata
    (CONTRACT §11); with ``room_metadata_unique`` the metadata gains the room's id under
    ``"room"``, so every room's text is its own. Agents answer a poll that carries the
    hash of their last reply with a delta when the orchestrator's Hello accepts deltas, as
    the real agent does (docs/snapshots-at-scale.md); ``deltas=False`` sends full
    replies only, as an agent older than deltas does."""

    url: str | tuple[str, ...]
    key: str = AGENT_KEY
    agents: int = 100
    rooms: int = 20
    processes: int = 2
    room_types: tuple[str, ...] = ("match",)
    regions: tuple[str, ...] = ("eu", "us")
    max_rooms: int | None = None
    silent: float = 0.0
    late: float = 0.0
    garbage: float = 0.0
    connect_concurrency: int = 32  # handshakes in flight per process
    room_max_connections: int | None = None
    room_metadata: Mapping[str, Any] | None = None
    room_metadata_unique: bool = True
    deltas: bool = True  # answer with deltas when the orchestrator accepts them


@dataclass
class LoadReport:
    """Merged counters of every worker since the last reset."""

    elapsed: float = 0.0
    agents: int = 0
    joined: int = 0
    dialling: int = 0  # dials queued or in their handshake
    open_unjoined: int = 0  # sockets open without a Hello
    rooms: int = 0
    hellos: int = 0
    polls: int = 0
    replies_hash: int = 0
    replies_full: int = 0  # deltas included: a delta is a full reply on the wire
    replies_delta: int = 0
    bytes_full: int = 0
    commands: int = 0
    acks: int = 0
    conn_changes: int = 0
    rooms_created: int = 0
    rooms_destroyed: int = 0
    cpu_s: float = 0.0
    closes: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    dial_failures: Counter[str] = field(default_factory=Counter)  # node down, standby's 503
    lateness: Histogram = field(default_factory=Histogram)

    @property
    def replies(self) -> int:
        return self.replies_hash + self.replies_full

    def closed(self, behaviour: str, *codes: int) -> int:
        """Connections of ``behaviour`` agents the server closed with one of ``codes``
        (any code when none is given)."""
        total = 0
        for key, n in self.closes.items():
            who, _, code = key.partition(":")
            if who == behaviour and (not codes or int(code) in codes):
                total += n
        return total

    def evicted(self, behaviour: str = "ok") -> int:
        return self.closed(behaviour, 4008)

    def kicked(self, behaviour: str = "ok") -> int:
        return self.closed(behaviour, 4000, 4002, 4003, 4004)

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def summary(self) -> dict[str, Any]:
        lateness = self.lateness
        return {
            "elapsed_s": round(self.elapsed, 2),
            "agents": self.agents,
            "joined": self.joined,
            "dialling": self.dialling,
            "open_unjoined": self.open_unjoined,
            "rooms": self.rooms,
            "polls": self.polls,
            "polls_per_s": round(self.polls / self.elapsed, 1) if self.elapsed else 0.0,
            "replies_hash": self.replies_hash,
            "replies_full": self.replies_full,
            "replies_delta": self.replies_delta,
            "acks": self.acks,
            "poll_delay_p50_ms": round(lateness.quantile(0.5) * 1000, 2),
            "poll_delay_p99_ms": round(lateness.quantile(0.99) * 1000, 2),
            "poll_delay_max_ms": round(lateness.max * 1000, 2),
            "evicted_ok": self.evicted("ok"),
            "kicked_ok": self.kicked("ok"),
            "closes": dict(self.closes),
            "errors": dict(self.errors),
            "dial_failures": dict(self.dial_failures),
            "loadgen_cpu_s": round(self.cpu_s, 2),
        }


def _behaviours(config: LoadConfig, count: int) -> tuple[Behaviour, ...]:
    """``ok`` agents first, misbehaving ones at the end of each worker's slice."""
    silent = round(config.silent * count)
    late = round(config.late * count)
    garbage = round(config.garbage * count)
    ok = max(0, count - silent - late - garbage)
    out: list[Behaviour] = []
    for behaviour, n in (("ok", ok), ("silent", silent), ("late", late), ("garbage", garbage)):
        out += [cast(Behaviour, behaviour)] * n
    return tuple(out[:count])


class LoadGenerator:
    """``with LoadGenerator(config) as load: load.wait_joined(); …; load.report()``."""

    def __init__(self, config: LoadConfig) -> None:
        self.config = config
        self._conns: list[Connection] = []
        self._procs: list[BaseProcess] = []
        self._since = time.monotonic()
        self._shares: list[float] = []

    def start(self) -> None:
        config = self.config
        context = multiprocessing.get_context("spawn")
        processes = max(1, min(config.processes, config.agents))
        first = 0
        for worker in range(processes):
            count = config.agents // processes + (1 if worker < config.agents % processes else 0)
            parent, child = context.Pipe()
            worker_config = WorkerConfig(
                worker=worker,
                first=first,
                behaviours=_behaviours(config, count),
                rooms=config.rooms,
                room_types=config.room_types,
                regions=config.regions,
                max_rooms=config.max_rooms,
                urls=(config.url,) if isinstance(config.url, str) else tuple(config.url),
                key=config.key,
                connect_concurrency=config.connect_concurrency,
                room_max_connections=config.room_max_connections,
                room_metadata=config.room_metadata,
                room_metadata_unique=config.room_metadata_unique,
                deltas=config.deltas,
            )
            proc = context.Process(
                target=worker_main, args=(child, worker_config), name=f"loadgen-{worker}"
            )
            proc.daemon = True
            proc.start()
            child.close()
            self._conns.append(parent)
            self._procs.append(proc)
            self._shares.append(count / config.agents)
            first += count
        self._since = time.monotonic()

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._procs if p.pid is not None]

    def _ask(self, message: dict[str, Any], timeout: float = 30.0) -> list[dict[str, Any]]:
        for conn in self._conns:
            conn.send(message)
        replies: list[dict[str, Any]] = []
        for conn in self._conns:
            if not conn.poll(timeout):
                raise TimeoutError(f"loadgen worker did not answer {message.get('op')!r}")
            replies.append(conn.recv())
        return replies

    def joined(self) -> int:
        return sum(int(r["joined"]) for r in self._ask({"op": "status"}))

    def wait_joined(self, count: int | None = None, timeout: float = 120.0) -> int:
        """Wait until ``count`` agents (default: all) hold a connection with a Hello."""
        wanted = self.config.agents if count is None else count
        deadline = time.monotonic() + timeout
        joined = self.joined()
        while joined < wanted and time.monotonic() < deadline:
            time.sleep(0.1)
            joined = self.joined()
        return joined

    def set(
        self,
        *,
        churn_per_s: float | None = None,
        replace_per_s: float | None = None,
        change_fraction: float | None = None,
        policy: ReplyPolicy | None = None,
        add_rooms: int | None = None,
    ) -> None:
        """Steer every worker. Rates are fleet-wide per second, split by agent share."""
        for conn, share in zip(self._conns, self._shares, strict=True):
            conn.send(
                {
                    "op": "set",
                    "churn_per_s": None if churn_per_s is None else churn_per_s * share,
                    "replace_per_s": None if replace_per_s is None else replace_per_s * share,
                    "change_fraction": change_fraction,
                    "policy": policy,
                    "add_rooms": add_rooms,
                }
            )
        for conn in self._conns:
            if not conn.poll(30.0):
                raise TimeoutError("loadgen worker did not answer 'set'")
            conn.recv()

    def report(self, *, reset: bool = False) -> LoadReport:
        """Counters since the last reset (or start); ``reset`` starts a new window."""
        now = time.monotonic()
        report = self._merge(self._ask({"op": "report", "reset": reset}), now - self._since)
        if reset:
            self._since = now
        return report

    def reset(self) -> None:
        self.report(reset=True)

    def stop(self) -> LoadReport:
        """Close every connection, end the workers; the final report."""
        report = LoadReport()
        if self._conns:
            with contextlib.suppress(TimeoutError, OSError, EOFError):
                report = self._merge(
                    self._ask({"op": "stop"}, timeout=15.0), time.monotonic() - self._since
                )
        for proc in self._procs:
            proc.join(10.0)
            if proc.is_alive():
                proc.terminate()
                proc.join(5.0)
        for conn in self._conns:
            conn.close()
        self._conns.clear()
        self._procs.clear()
        return report

    @staticmethod
    def _merge(replies: list[dict[str, Any]], elapsed: float) -> LoadReport:
        report = LoadReport(elapsed=elapsed)
        for reply in replies:
            for name in (
                "agents",
                "joined",
                "dialling",
                "open_unjoined",
                "rooms",
                "hellos",
                "polls",
                "replies_hash",
                "replies_full",
                "replies_delta",
                "bytes_full",
                "commands",
                "acks",
                "conn_changes",
                "rooms_created",
                "rooms_destroyed",
            ):
                setattr(report, name, getattr(report, name) + int(reply[name]))
            report.cpu_s += float(reply["cpu_s"])
            report.closes.update(reply["closes"])
            report.errors.update(reply["errors"])
            report.dial_failures.update(reply["dial_failures"])
            report.lateness.merge(Histogram.from_state(reply["lateness"]))
        return report

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
