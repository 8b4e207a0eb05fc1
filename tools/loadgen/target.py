"""The orchestrator under test, alone in its process: ``python -m tools.loadgen.target``.

It runs the real :class:`fleet_server.Orchestrator` (REST, SSE, optionally gRPC) on
ephemeral 127.0.0.1 ports with the load generator's keys, prints one JSON line with
its ports once it listens, then answers commands on stdin, one JSON line each:

- ``stats``: fleet totals, ``instance:stale`` events by the stale agent's behaviour
  (the load generator names agents ``lg<w>-<i>-<behaviour>``), warnings by kind, agent
  upgrades refused because too many agents were joining (ever), the
  garbage collector's runs and longest pauses per generation (wall and CPU time),
  the event loop's lag (how late a 50 ms timer fires: p50, p99, max, and the same less
  the time the loop thread waited for a CPU), with ``--poll-spread`` the polls sent per
  10 ms (mean, p99, max), and, with
  ``--count-events``, every event by type;
- ``reclaim``: the collector's reclaim (unfreeze, full collection), timed;
- ``block MS``: hold the event loop for MS ms (what a long callback does);
- ``reset``: zero those counters; ``gc``: a full collection (before reading RSS), and
  the number of objects the collector tracks;
- ``quit`` or end of input: shut down cleanly.

With ``--etcd URL`` it campaigns for the lead of ``--cluster`` (CONTRACT §10) as the
daemon's ``--etcd`` does; a standby then refuses agents and requests with ``NOT_LEADER``.

Logging stays at WARNING and is counted, not printed (errors are printed to stderr).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import sys
import threading
import time
import traceback
from collections import Counter
from typing import Any

from fleet_server import InstanceInfo, Orchestrator, _link
from fleet_server._collector import CollectorTuning
from fleet_server._events import EVENT_TYPES
from fleet_server._options import OrchestratorKeywords

from .._loops import add_loop_option, run
from ._generator import AGENT_KEY
from ._histogram import Histogram
from ._process import ADMIN_KEY
from ._worker import raise_fd_limit


class _CountingHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.counts: Counter[str] = Counter()
        self._stderr = logging.StreamHandler(sys.stderr)

    def emit(self, record: logging.LogRecord) -> None:
        words = str(record.msg).split()
        key = " ".join(w for w in words[:3] if "=" not in w and "%" not in w)
        self.counts[f"{record.levelname.lower()}: {key}"] += 1
        if record.levelno >= logging.ERROR:
            self._stderr.emit(record)


class _GcPauses:
    """Durations of the collector's runs (a full one stops the event loop): wall time,
    and the loop thread's CPU time (the difference is time other processes had the CPU).
    With ``report_over`` > 0, runs at least that long are also printed to stderr."""

    def __init__(self, report_over: float = 0.0) -> None:
        self._report_over = report_over
        self._started = 0.0
        self._started_cpu = 0.0
        self.reset()
        gc.callbacks.append(self._callback)

    def reset(self) -> None:
        self.runs = [0, 0, 0]
        self.total = 0.0
        self.total_cpu = 0.0
        self.longest = [0.0, 0.0, 0.0]
        self.longest_cpu = [0.0, 0.0, 0.0]
        self.collected = 0

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            self._started_cpu = time.thread_time()
            return
        took = time.perf_counter() - self._started
        took_cpu = time.thread_time() - self._started_cpu
        generation = info["generation"]
        self.runs[generation] += 1
        self.total += took
        self.total_cpu += took_cpu
        self.longest[generation] = max(self.longest[generation], took)
        self.longest_cpu[generation] = max(self.longest_cpu[generation], took_cpu)
        self.collected += info.get("collected", 0)
        if self._report_over and took >= self._report_over:
            print(
                f"gc generation {generation} took {1000 * took:.0f} ms "
                f"(cpu {1000 * took_cpu:.0f} ms), collected {info.get('collected', 0)}",
                file=sys.stderr,
            )

    def summary(self) -> dict[str, object]:
        return {
            "runs": self.runs,
            "total_ms": round(self.total * 1000, 1),
            "total_cpu_ms": round(self.total_cpu * 1000, 1),
            "longest_ms": [round(t * 1000, 1) for t in self.longest],
            "longest_cpu_ms": [round(t * 1000, 1) for t in self.longest_cpu],
            "collected": self.collected,
        }


async def _serve(args: argparse.Namespace) -> None:
    handler = _CountingHandler()
    pauses = _GcPauses(args.stall_report_ms / 1000.0)
    root = logging.getLogger("fleet")
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    root.propagate = False

    options: OrchestratorKeywords = {
        "agent_key": AGENT_KEY,
        "admin_key": ADMIN_KEY,
        "api": True,
        "grpc_port": 0 if args.grpc else None,
        "heartbeat_ms": args.heartbeat_ms,
        "command_timeout_ms": args.command_timeout_ms,
    }
    options.update(_cluster_options(args))
    orch = Orchestrator(host="127.0.0.1", port=0, metrics=not args.no_metrics, **options)
    events: Counter[str] = Counter()
    stale: Counter[str] = Counter()

    def on_stale(info: InstanceInfo) -> None:
        stale[info.name.rsplit("-", 1)[-1]] += 1

    orch.on("instance:stale", on_stale)
    if args.count_events:
        for event_type in EVENT_TYPES:

            def count(payload: Any, event_type: str = event_type) -> None:
                events[event_type] += 1

            orch.on(event_type, count)

    await orch.listen()
    collector = CollectorTuning(
        lambda: orch.transport.closed_links, lambda: len(orch.transport.links)
    )
    if args.collector == "daemon":
        collector.start()
    lag = Histogram()
    own_lag = Histogram()  # the lag less the time other processes had the CPU
    watcher = asyncio.create_task(_watch_lag(lag, own_lag))
    spread = _PollSpread() if args.poll_spread else None
    stalls = _StallReporter(args.stall_report_ms / 1000.0) if args.stall_report_ms else None
    print(
        json.dumps({"port": orch.port, "grpc_port": orch.grpc_port, "pid": os.getpid()}),
        flush=True,
    )
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    try:
        while True:
            line = (await reader.readline()).strip()
            if not line or line == b"quit":
                break
            if line == b"stats":
                # not ``fleet.stats``: its state hash re-encodes and hashes the whole
                # fleet (hundreds of ms at 360,000 rooms), a stall of the harness's own
                instances, rooms, connections = orch.fleet.counts()
                reply: dict[str, Any] = {
                    "instances": instances,
                    "rooms": rooms,
                    "connections": connections,
                    "stale": dict(stale),
                    "events": dict(events),
                    "warnings": dict(handler.counts),
                    "agent_links": len(orch.transport.links),
                    "refused_joining": orch.transport.refused_joining,
                    "gc": pauses.summary(),
                    "poll_spread": spread.summary() if spread is not None else None,
                    "loop_lag_ms": {
                        "p50": round(lag.quantile(0.5) * 1000, 2),
                        "p99": round(lag.quantile(0.99) * 1000, 2),
                        "max": round(lag.max * 1000, 2),
                        "own_p99": round(own_lag.quantile(0.99) * 1000, 2),
                        "own_max": round(own_lag.max * 1000, 2),
                    },
                }
            elif line == b"reset":
                events.clear()
                stale.clear()
                handler.counts.clear()
                pauses.reset()
                lag.clear()
                own_lag.clear()
                if spread is not None:
                    spread.reset()
                reply = {}
            elif line.startswith(b"block "):  # what-if: one callback holding the loop
                time.sleep(int(line.split()[1]) / 1000)  # noqa: ASYNC251 - on purpose
                reply = {}
            elif line == b"reclaim":  # what-if: the collector's reclaim, timed
                started = time.perf_counter(), time.thread_time()
                collector.reclaim()
                reply = {
                    "ms": round(1000 * (time.perf_counter() - started[0]), 1),
                    "cpu_ms": round(1000 * (time.thread_time() - started[1]), 1),
                }
            elif line == b"gc":
                collected = gc.collect()
                reply = {"collected": collected, "tracked_objects": len(gc.get_objects())}
            else:
                reply = {"error": f"unknown command {line.decode(errors='replace')!r}"}
            print(json.dumps(reply), flush=True)
    finally:
        watcher.cancel()
        if stalls is not None:
            stalls.stop()
        await collector.stop()
        await orch.shutdown()


class _PollSpread:
    """Polls sent per 10 ms (``--poll-spread``): how evenly the links' timers spread
    their polls over a heartbeat, or how they bunch up."""

    def __init__(self) -> None:
        self.counts: Counter[int] = Counter()
        self.since = time.monotonic()
        original = _link.poll_message

        def counted(req_id: str, known_hash: str | None, status: str) -> bytes:
            self.counts[int(time.monotonic() * 100)] += 1
            return original(req_id, known_hash, status)

        _link.poll_message = counted

    def reset(self) -> None:
        self.counts.clear()
        self.since = time.monotonic()

    def summary(self) -> dict[str, float]:
        windows = max(1, int((time.monotonic() - self.since) * 100))
        busiest = sorted(self.counts.values(), reverse=True)
        total = sum(busiest)
        return {
            "polls": total,
            "mean_per_10ms": round(total / windows, 2),
            "p99_per_10ms": busiest[windows // 100] if len(busiest) > windows // 100 else 0,
            "max_per_10ms": busiest[0] if busiest else 0,
        }


class _StallReporter:
    """A thread that prints the loop thread's stack whenever the loop stalls too long.

    The loop bumps a counter every 10 ms; when the counter has not moved for
    ``threshold`` seconds, the main thread's current stack goes to stderr (once per
    stall), which names the code that holds the loop. When the stall ends, its length
    goes there too, with how long the loop thread ran and how long it waited for a CPU
    meanwhile (``/proc/self/task/<tid>/schedstat``): a busy machine, not the loop's own
    work, makes the waiting part.
    """

    def __init__(self, threshold: float) -> None:
        self._threshold = threshold
        self._ticks = 0
        self._loop = asyncio.get_running_loop()
        self._main = threading.main_thread().ident
        self._schedstat = f"/proc/self/task/{threading.get_native_id()}/schedstat"
        self._stop = threading.Event()
        self._handle = self._loop.call_later(0.01, self._tick)
        self._thread = threading.Thread(target=self._watch, name="stall-reporter", daemon=True)
        self._thread.start()

    def _tick(self) -> None:
        self._ticks += 1
        self._handle = self._loop.call_later(0.01, self._tick)

    def stop(self) -> None:
        self._stop.set()
        self._handle.cancel()

    def _sched(self) -> tuple[int, int]:
        """Nanoseconds the loop thread has run, and waited runnable for a CPU."""
        try:
            with open(self._schedstat) as f:
                ran, waited, _ = f.read().split()
            return int(ran), int(waited)
        except (OSError, ValueError):
            return 0, 0

    def _watch(self) -> None:
        seen, since, reported = self._ticks, time.monotonic(), False
        sched = self._sched()
        while not self._stop.wait(0.005):
            now = time.monotonic()
            if self._ticks != seen:
                if reported:
                    ran, waited = (b - a for a, b in zip(sched, self._sched(), strict=True))
                    print(
                        f"stall ended after {1000 * (now - since):.0f} ms "
                        f"(ran {ran / 1e6:.0f} ms, waited for a CPU {waited / 1e6:.0f} ms)",
                        file=sys.stderr,
                    )
                seen, since, reported = self._ticks, now, False
                sched = self._sched()
            elif not reported and now - since >= self._threshold:
                reported = True
                frame = sys._current_frames().get(self._main or 0)
                stack = "".join(traceback.format_stack(frame)) if frame else "(no frame)"
                print(
                    f"stall over {1000 * self._threshold:.0f} ms "
                    f"({time.strftime('%H:%M:%S')}) at:\n{stack}",
                    file=sys.stderr,
                )


def _cluster_options(args: argparse.Namespace) -> OrchestratorKeywords:
    """Leader election on etcd when ``--etcd`` is given (CONTRACT §10); nothing otherwise."""
    if not args.etcd:
        return {}
    options: OrchestratorKeywords = {
        "etcd_endpoints": args.etcd,
        "cluster": args.cluster,
        "leader_lease_ms": args.leader_lease_ms,
    }
    if args.settle_ms is not None:
        options["settle_ms"] = args.settle_ms
    return options


async def _watch_lag(lag: Histogram, own: Histogram, period: float = 0.05) -> None:
    """How late a 50 ms timer fires: the event loop's scheduling delay; ``own`` gets the
    same less the time the loop thread waited for a CPU since the previous sample (an
    estimate of the part the loop's own work caused, on a machine shared with others)."""
    loop = asyncio.get_running_loop()
    schedstat = f"/proc/self/task/{threading.get_native_id()}/schedstat"
    waited = _cpu_wait(schedstat)
    while True:
        due = loop.time() + period
        await asyncio.sleep(period)
        late = max(0.0, loop.time() - due)
        lag.add(late)
        before, waited = waited, _cpu_wait(schedstat)
        own.add(max(0.0, late - (waited - before)))


def _cpu_wait(schedstat: str) -> float:
    """Seconds this thread has waited, runnable, for a CPU (0 where unknown)."""
    try:
        with open(schedstat) as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, ValueError, IndexError):
        return 0.0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tools.loadgen.target")
    parser.add_argument("--heartbeat-ms", type=int, default=1000)
    parser.add_argument("--command-timeout-ms", type=int, default=10_000)
    parser.add_argument("--grpc", action="store_true", help="serve gRPC on an ephemeral port")
    parser.add_argument("--count-events", action="store_true", help="count events by type")
    parser.add_argument(
        "--no-metrics",
        action="store_true",
        help="no hot-path metric tallies and no loop-lag task (the bench's metrics-off side)",
    )
    parser.add_argument(
        "--collector",
        choices=("daemon", "default"),
        default="daemon",
        help="the daemon's garbage-collector tuning (default) or CPython's defaults",
    )
    parser.add_argument(
        "--stall-report-ms",
        type=int,
        default=0,
        help="print the loop thread's stack to stderr whenever the loop stalls this long",
    )
    parser.add_argument(
        "--poll-spread",
        action="store_true",
        help="count polls sent per 10 ms (how the links' poll timers bunch up)",
    )
    parser.add_argument(
        "--etcd", action="append", default=[], help="an etcd endpoint: campaign (repeatable)"
    )
    parser.add_argument("--cluster", default="default", help="the cluster name (with --etcd)")
    parser.add_argument("--leader-lease-ms", type=int, default=5000, help="with --etcd")
    parser.add_argument(
        "--settle-ms", type=int, help="how long explicit-id creates wait after a takeover"
    )
    add_loop_option(parser)
    args = parser.parse_args(argv)
    raise_fd_limit()
    run(_serve(args), args.loop)


if __name__ == "__main__":
    main()
