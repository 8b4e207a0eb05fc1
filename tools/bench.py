"""The benchmark suite: every performance target, each next to a floor from the same run.

``make bench`` (or ``python tools/bench.py``) runs the full sizes; ``make bench-quick``
(``--quick``) runs scaled-down sizes in about two minutes. ``--only NAME`` runs some
scenarios (steady, scaling, reads, placement, single, memory, streams, metrics, takeover,
ha, seats, agent, bigagent, scale18k), ``--profile DIR`` samples the orchestrator with
py-spy during each measured phase and writes the collapsed stacks and a hot-spot summary
per phase there, ``--json PATH`` saves the rows.

``takeover`` and ``ha`` run a cluster: one real etcd (``etcd`` on PATH, 127.0.0.1,
ephemeral ports, a temporary data dir) and orchestrators campaigning on it.
``takeover`` SIGKILLs the leader of three under a fleet of agents that know every
node's URL and times, from outside, the new leader, the fleet's return and the first
creates; ``ha`` compares the create path of an HA leader with a single node's.

``seats`` (CONTRACT §11) bursts ``POST /v1/seats`` (without, then with a metadata
filter) over agents whose rooms report seats and metadata, next to ``POST /v1/rooms`` on
the same fleet and the create floor, checks that no room was over-committed and releases
every reservation; then it compares the polls of a quiet fleet whose rooms all carry
unchanging metadata with the same fleet without: as they come (one forced full reply in
twelve), all hash-only, all full.

``agent`` (:mod:`tools.bench_agent`) measures the real agent inside a game server: its
CPU per create and per hash-only reply, next to a bare WebSocket client's. ``bigagent``
(:mod:`tools.bench_big_agent`) joins one agent with 100,000 rooms × 256 B of metadata
(replies in parts, then deltas; CONTRACT §15), churns 1 % of its rooms per second and
checks that the orchestrator stays in sync.

Every server runs in its own process: the orchestrator under test
(:mod:`tools.loadgen.target`) and the floor (:mod:`tools.floors`, a bare aiohttp server
doing the least work the same operation could do), so each one's CPU time comes from
``/proc/<pid>/stat``. The load comes from :mod:`tools.loadgen` worker processes
(agents) and from this process (HTTP clients); everything talks to 127.0.0.1 only, and
every load loop is bounded in time and count.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import math
import multiprocessing
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Final

if __package__ in (None, ""):  # run as a script: python tools/bench.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tools.bench_scale import scale18k
from tools.loadgen import (
    ADMIN_KEY,
    Histogram,
    LoadConfig,
    LoadGenerator,
    LoadReport,
    OrchestratorProcess,
    ServerProcess,
    cpu_seconds,
)
from tools.loadgen._cluster import OrchestratorCluster, base_url, watch_takeover
from tools.loadgen._http import HttpLoadResult, http_load, request_bytes
from tools.loadgen._streams import StreamsConfig, streams_main

HOST: Final = "127.0.0.1"
AUTH: Final = {"Authorization": f"Bearer {ADMIN_KEY}"}


# --- sizes ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sizes:
    processes: int = 2  # load-generator worker processes
    # Stand-in agents answer with deltas as the real agent does (docs/snapshots-at-scale.md);
    # steady and scaling measure full snapshots and turn them off; --full-replies: all off.
    deltas: bool = True
    heartbeat_ms: int = 1000
    steady_agents: int = 10_000
    scaling_agents: int = 1_000  # the reference fleet of the scaling ratio
    rooms: int = 20
    churn: float = 0.01  # fraction of rooms changing per second
    settle_s: float = 4.0
    pause_s: float = 1.5  # between phases
    tail_heartbeats: float = 2.5  # after churn stops, for the last replies to land
    idle_s: float = 2.0  # measuring a server's background CPU
    quiet_s: float = 15.0
    full_s: float = 15.0
    full_fraction: float = 0.25  # agents changing a room before every reply, phase "full"
    steady_s: float = 60.0
    post_samples: int = 200
    fleet_agents: int = 100
    fleet_rooms: int = 50  # × fleet_agents = the 5,000-room read
    read_s: float = 5.0
    place_s: float = 15.0
    single_s: float = 30.0
    concurrency: int = 32
    memory_agents: int = 100
    memory_rooms: int = 2_000  # × memory_agents = 200,000 rooms
    type_reads: int = 8
    sse_streams: int = 100
    grpc_streams: int = 10
    event_rates: tuple[float, ...] = (1_000.0, 5_000.0)  # room events/s (creates + destroys)
    sse_p99_ms: float = 50.0  # SSE delivery p99 target at the first rate
    stream_s: float = 20.0
    metrics_agents: int = 2_000  # metrics on vs off: a fleet of this many agents
    metrics_rounds: int = 3  # on/off pairs, alternated; medians compared
    metrics_quiet_s: float = 10.0
    metrics_create_s: float = 5.0
    takeover_agents: tuple[int, ...] = (1_000, 10_000)
    takeover_nodes: int = 3
    lease_ms: int = 5_000  # leader_lease_ms of every clustered node (the default)
    settle_ms: int = 15_000  # how long a new leader holds explicit-id creates (the default)
    takeover_timeout_s: float = 120.0
    takeover_connects: int = 32  # handshakes in flight per load-generator process
    ha_rounds: int = 6  # pairs of create bursts: one on a single node, one on an HA leader
    ha_burst_s: float = 5.0
    room_seats: int = 16  # maxConnections of every room in the seat bursts
    seats_s: float = 15.0  # each burst: reservations, creates, the floor's round trips
    seats_poll_agents: int = 2_000  # metadata vs none: two quiet fleets of this many agents
    seats_rounds: int = 3  # pairs of windows, alternated; medians compared
    seats_quiet_s: float = 12.0  # 12 heartbeats: one forced full reply per agent
    seats_window_s: float = 5.0  # every reply hash-only, then every reply full


QUICK: Final = replace(
    Sizes(),
    steady_agents=1_000,
    scaling_agents=100,
    settle_s=0.8,
    pause_s=0.4,
    tail_heartbeats=1.5,
    idle_s=0.5,
    quiet_s=1.2,
    full_s=1.2,
    steady_s=3.0,
    post_samples=20,
    read_s=1.0,
    place_s=2.0,
    single_s=2.0,
    memory_rooms=200,
    type_reads=3,
    sse_streams=20,
    grpc_streams=2,
    event_rates=(300.0,),
    stream_s=1.5,
    metrics_agents=300,
    metrics_rounds=1,
    metrics_quiet_s=1.5,
    metrics_create_s=1.5,
    takeover_agents=(200,),
    lease_ms=2_000,
    takeover_timeout_s=60.0,
    ha_rounds=2,
    ha_burst_s=1.0,
    seats_s=0.8,
    seats_poll_agents=150,
    seats_rounds=1,
    seats_quiet_s=1.0,
    seats_window_s=0.5,
)


# --- rows and the table -----------------------------------------------------------------


@dataclass
class Row:
    """One figure. ``ratio`` is value / floor; ``ok`` is None for a figure without a target."""

    scenario: str
    figure: str
    value: float | None
    unit: str
    floor: float | None = None
    target: str = ""
    ok: bool | None = None
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.value is None or not self.floor:
            return None
        return self.value / self.floor


def at_most_ratio(row: Row, limit: float) -> Row:
    row.target = f"≤ {limit:g}× floor"
    ratio = row.ratio
    row.ok = ratio is not None and ratio <= limit
    return row


def at_least_ratio(row: Row, limit: float) -> Row:
    row.target = f"≥ {limit:g}× floor"
    ratio = row.ratio
    row.ok = ratio is not None and ratio >= limit
    return row


def at_most(row: Row, limit: float, unit: str = "") -> Row:
    row.target = f"≤ {limit:g}{(' ' + unit) if unit else ''}"
    row.ok = row.value is not None and row.value <= limit
    return row


def at_least(row: Row, limit: float, unit: str = "") -> Row:
    row.target = f"≥ {limit:g}{(' ' + unit) if unit else ''}"
    row.ok = row.value is not None and row.value >= limit
    return row


def _num(value: float | None) -> str:
    if value is None:
        return "—"
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def table(rows: list[Row]) -> str:
    header = ("scenario", "figure", "value", "floor", "ratio", "target", "result")
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] * 2 + ["---:"] * 3 + ["---"] * 2) + "|",
    ]
    for row in rows:
        ratio = row.ratio
        result = "—" if row.ok is None else ("PASS" if row.ok else "**FAIL**")
        figure = f"{row.figure} ({row.unit})" if row.unit else row.figure
        if row.note:
            figure += f" — {row.note}"
        lines.append(
            "| "
            + " | ".join(
                (
                    row.scenario,
                    figure,
                    _num(row.value),
                    _num(row.floor),
                    "—" if ratio is None else f"{ratio:.2f}×",
                    row.target or "—",
                    result,
                )
            )
            + " |"
        )
    return "\n".join(lines)


# --- measuring ------------------------------------------------------------------------


def log(message: str) -> None:
    stamp = time.strftime("%H:%M:%S")
    print(f"[bench {stamp}] {message}", file=sys.stderr, flush=True)


class Profiler:
    """py-spy ``record --nonblocking`` of a process during one phase (when enabled)."""

    def __init__(self, out_dir: Path | None) -> None:
        self.out_dir = out_dir
        self.py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
            if not Path(self.py_spy).exists():
                raise SystemExit("--profile needs py-spy: .venv/bin/pip install py-spy")

    def _record(self, name: str, pid: int, seconds: int) -> subprocess.Popen[bytes]:
        """``py-spy record`` of ``pid`` for ``seconds`` into ``<out_dir>/<name>.txt``."""
        assert self.out_dir is not None
        raw = self.out_dir / f"{name}.txt"
        options = ["--pid", str(pid), "--rate", "100", "--duration", str(seconds)]
        return subprocess.Popen(
            [
                self.py_spy,
                "record",
                "--nonblocking",
                *options,
                "--format",
                "raw",
                "--output",
                str(raw),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    @contextlib.contextmanager
    def phase(self, name: str, pid: int, seconds: float) -> Iterator[None]:
        if self.out_dir is None:
            yield
            return
        proc = self._record(name, pid, max(1, math.floor(seconds)))
        try:
            yield
        finally:
            try:
                proc.wait(timeout=seconds + 30)
            except subprocess.TimeoutExpired:
                proc.terminate()
                proc.wait(10)
            self._summarize(name)

    def start(self, name: str, pid: int, max_seconds: float) -> Recording | None:
        """py-spy on ``pid`` from now until :meth:`Recording.stop` (or ``max_seconds``),
        for phases whose end is an event, not a duration; None when profiling is off."""
        if self.out_dir is None:
            return None
        proc = self._record(name, pid, max(1, math.ceil(max_seconds)))
        return Recording(self, name, proc)

    def save_log(self, name: str, server: ServerProcess) -> None:
        """Keep a server's stderr (stall reports with ``--stall-report-ms``) as
        ``DIR/<name>.log``."""
        if self.out_dir is not None:
            (self.out_dir / f"{name}.log").write_text(server.log_tail(1 << 24))

    def _summarize(self, name: str) -> None:
        assert self.out_dir is not None
        raw = self.out_dir / f"{name}.txt"
        if raw.exists():
            (self.out_dir / f"{name}.top.txt").write_text(summarize_profile(raw))


@dataclass
class Recording:
    """One py-spy started by :meth:`Profiler.start`."""

    profiler: Profiler
    name: str
    proc: subprocess.Popen[bytes]

    def stop(self, rename: str | None = None) -> None:
        """End the recording now (py-spy writes its samples on SIGINT); ``rename`` files
        it under another phase name."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.terminate()
            self.proc.wait(10)
        out_dir = self.profiler.out_dir
        assert out_dir is not None
        name = self.name
        if rename is not None and (out_dir / f"{name}.txt").exists():
            (out_dir / f"{name}.txt").replace(out_dir / f"{rename}.txt")
            name = rename
        self.profiler._summarize(name)


def summarize_profile(path: Path, top: int = 25) -> str:
    """Self and inclusive shares of the sampled (non-idle) stacks, by function."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [_frame_name(f) for f in stack.split(";") if f]
        if not frames:
            continue
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    if not total:
        return "no samples\n"
    out = [f"{total} samples (non-idle) in {path.name}", "", "inclusive, project code:"]
    project = [
        (f, n)
        for f, n in inclusive.most_common()
        if any(p in f for p in ("fleet_server/", "gateway/", "fleet_agent/"))
    ]
    out += [f"  {100 * n / total:5.1f}%  {f}" for f, n in project[:top]]
    out += ["", "self (leaf), everything:"]
    out += [f"  {100 * n / total:5.1f}%  {f}" for f, n in own.most_common(top)]
    out += ["", "inclusive, everything:"]
    out += [f"  {100 * n / total:5.1f}%  {f}" for f, n in inclusive.most_common(top)]
    return "\n".join(out) + "\n"


def _frame_name(frame: str) -> str:
    """``func (path/to/file.py:12)`` → ``file path:func`` with the path cut at the package."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    file_path = where.rsplit(":", 1)[0] if ":" in where else where
    for marker in ("fleet_server/", "gateway/", "fleet_agent/", "site-packages/", "python3.11/"):
        index = file_path.find(marker)
        if index >= 0:
            file_path = file_path[index:].removeprefix("site-packages/")
            break
    return f"{file_path}:{name}"


@dataclass
class Window:
    """CPU seconds of one process over a wall-clock window, with the load report and, for
    the orchestrator, the seconds its garbage collector ran."""

    cpu: float
    wall: float
    load: LoadReport = field(default_factory=LoadReport)
    gc: float = 0.0
    loop_lag_p99: float = 0.0

    @property
    def cpu_rate(self) -> float:
        return self.cpu / self.wall if self.wall else 0.0


def measure(
    server: ServerProcess,
    load: LoadGenerator,
    seconds: float,
    profiler: Profiler | None = None,
    name: str = "",
) -> Window:
    runner = server if isinstance(server, OrchestratorProcess) else None
    if runner is not None:
        runner.reset()
    load.reset()
    started, cpu0 = time.monotonic(), server.cpu_seconds()
    if profiler is not None and name:
        with profiler.phase(name, server.pid, seconds):
            time.sleep(seconds)
    else:
        time.sleep(seconds)
    cpu1, ended = server.cpu_seconds(), time.monotonic()
    window = Window(cpu1 - cpu0, ended - started, load.report(reset=True))
    if runner is not None:
        stats = runner.stats()
        window.gc = float(stats["gc"]["total_ms"]) / 1000
        window.loop_lag_p99 = float(stats["loop_lag_ms"]["p99"]) / 1000
    return window


def idle_rate(server: ServerProcess, seconds: float = 2.0) -> float:
    """CPU seconds per second the server spends without requests (background polls)."""
    started, cpu0 = time.monotonic(), server.cpu_seconds()
    time.sleep(seconds)
    return (server.cpu_seconds() - cpu0) / (time.monotonic() - started)


@dataclass
class HttpRun:
    result: HttpLoadResult
    cpu: float  # server CPU seconds during the run, background subtracted

    @property
    def cpu_per_request(self) -> float:
        return self.cpu / self.result.requests if self.result.requests else math.inf


def run_http(
    server: ServerProcess,
    make_request: Callable[[int], bytes],
    *,
    concurrency: int,
    duration: float | None = None,
    count: int | None = None,
    background: float = 0.0,
    profiler: Profiler | None = None,
    name: str = "",
    on_response: Callable[[int, bytes], None] | None = None,
) -> HttpRun:
    cpu0, started = server.cpu_seconds(), time.monotonic()
    seconds = duration if duration is not None else 10.0
    phase = (
        profiler.phase(name, server.pid, seconds)
        if profiler is not None and name
        else contextlib.nullcontext()
    )
    with phase:
        result = asyncio.run(
            http_load(
                HOST,
                server.port,
                make_request,
                concurrency=concurrency,
                duration=duration,
                count=count,
                keep_body=on_response is not None,
                on_response=on_response,
            )
        )
    cpu = server.cpu_seconds() - cpu0 - background * (time.monotonic() - started)
    return HttpRun(result, max(0.0, cpu))


def fetch(server: ServerProcess, path: str, headers: dict[str, str] | None = None) -> bytes:
    bodies: list[bytes] = []
    raw = request_bytes("GET", path, headers={**AUTH, **(headers or {})})

    async def once() -> None:
        await http_load(
            HOST,
            server.port,
            lambda _: raw,
            concurrency=1,
            count=1,
            keep_body=True,
            on_response=lambda status, body: bodies.append(body),
        )

    asyncio.run(once())
    return bodies[0] if bodies else b""


WRK_MISSING: Final = "wrk not installed: apt-get install wrk (Debian package wrk)"


@dataclass
class WrkRun:
    """One ``wrk`` run against a server: its throughput and the server's CPU meanwhile."""

    requests: int
    seconds: float
    errors: int  # responses that were not 2xx or 3xx, and socket errors
    cpu: float  # server CPU seconds during the run

    @property
    def throughput(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def cpu_per_request(self) -> float:
        return self.cpu / self.requests if self.requests else math.inf


def run_wrk(
    server: ServerProcess,
    path: str,
    headers: dict[str, str] | None = None,
    *,
    seconds: float,
    connections: int = 16,
) -> WrkRun | None:
    """``wrk`` (one thread, keep-alive) on ``path`` for ``seconds``; None without wrk."""
    wrk = shutil.which("wrk")
    if wrk is None:
        return None
    command = [wrk, "-t", "1", "-c", str(connections), "-d", f"{max(1, round(seconds))}s"]
    for name, value in (headers or {}).items():
        command += ["-H", f"{name}: {value}"]
    command.append(f"http://{HOST}:{server.port}{path}")
    cpu0 = server.cpu_seconds()
    out = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60).stdout
    cpu = server.cpu_seconds() - cpu0
    requests, elapsed, errors = 0, 0.0, 0
    for line in out.splitlines():
        words = line.split()
        if len(words) >= 4 and words[1] == "requests" and words[2] == "in":
            requests, elapsed = int(words[0]), float(words[3].rstrip("s,"))
        elif line.strip().startswith("Non-2xx or 3xx responses:"):
            errors += int(words[-1])
        elif line.strip().startswith("Socket errors:"):
            errors += sum(int(w.rstrip(",")) for w in words if w.rstrip(",").isdigit())
    return WrkRun(requests, elapsed, errors, cpu)


def post_create(prefix: str) -> Callable[[int], bytes]:
    headers = {**AUTH, "Content-Type": "application/json"}

    def make(index: int) -> bytes:
        body = f'{{"type":"match","roomId":"{prefix}-{index}"}}'.encode()
        return request_bytes("POST", "/v1/rooms", headers=headers, body=body)

    return make


# The metadata of every room in the seats scenario: one text shared by all the rooms of
# the reservation bursts; in the poll comparison each room adds its own id under "room",
# so no two texts are alike and no cache of texts can hold them.
ROOM_METADATA: Final = {"map": "harbor", "mode": "ranked", "region": "eu", "teams": 2}
SEAT_TTL_MS: Final = 120_000  # reservations outlive the bursts, the check and the releases


def post_seats(metadata: dict[str, Any] | None = None) -> Callable[[int], bytes]:
    """``POST /v1/seats`` for 1, 2, 3, 4 seats in turn, creating a room when none fits;
    with ``metadata``, only rooms whose metadata has those values."""
    headers = {**AUTH, "Content-Type": "application/json"}
    wanted = {} if metadata is None else {"metadata": metadata}
    requests = [
        request_bytes(
            "POST",
            "/v1/seats",
            headers=headers,
            body=json.dumps(
                {
                    "type": "match",
                    "seats": seats,
                    **wanted,
                    "create": {"options": {"mode": "ranked"}},
                    "ttlMs": SEAT_TTL_MS,
                }
            ).encode(),
        )
        for seats in (1, 2, 3, 4)
    ]
    return lambda index: requests[index % len(requests)]


@dataclass
class Grants:
    """The reservations a seat burst was granted (an ``on_response`` of :func:`run_http`)."""

    ids: list[str] = field(default_factory=list)
    seats: int = 0
    created: int = 0

    def __call__(self, status: int, body: bytes) -> None:
        if status not in (200, 201):
            return
        grant = json.loads(body)["data"]
        self.ids.append(grant["reservation"]["id"])
        self.seats += grant["reservation"]["seats"]
        self.created += bool(grant["created"])


def seat_counts(server: ServerProcess) -> tuple[int, int]:
    """Rooms whose connections and reserved seats pass their maxConnections, and the seats
    reserved over the whole fleet, from one ``GET /v1/rooms``."""
    rooms = json.loads(fetch(server, "/v1/rooms"))["data"]
    over = sum(
        1
        for room in rooms
        if room["maxConnections"] is not None
        and room["connections"] + room["reservedSeats"] > room["maxConnections"]
    )
    return over, sum(room["reservedSeats"] for room in rooms)


def floor_process(heartbeat_ms: int, sse_rate: float = 0.0) -> ServerProcess:
    args = ["--heartbeat-ms", str(heartbeat_ms)]
    if sse_rate:
        args += ["--sse-rate", str(sse_rate)]
    return ServerProcess("tools.floors", args)


def loadgen(url: str | tuple[str, ...], sizes: Sizes, agents: int, **options: Any) -> LoadGenerator:
    processes = sizes.processes if agents >= 200 else 1
    options["deltas"] = options.get("deltas", True) and sizes.deltas
    return LoadGenerator(LoadConfig(url=url, agents=agents, processes=processes, **options))


def _step_downs(runners: Iterable[dict[str, Any]]) -> int:
    """How many times these orchestrators stepped down (their warning counts)."""
    return sum(
        count
        for runner in runners
        for kind, count in runner["warnings"].items()
        if kind.startswith("warning: stepping down")
    )


def _span(values: list[float]) -> str:
    """``low–high`` of some figures (one figure alone when they agree)."""
    low, high = _num(min(values)), _num(max(values))
    return low if low == high else f"{low}–{high}"


def _solve(a: Window, b: Window) -> tuple[float, float]:
    """CPU per hash-only and per full reply from two windows with different mixes."""
    ha, fa, hb, fb = (
        a.load.replies_hash,
        a.load.replies_full,
        b.load.replies_hash,
        b.load.replies_full,
    )
    det = ha * fb - hb * fa
    if ha == 0 or fb == 0 or abs(det) < 1e-9 * max(1, ha * fb):
        per = a.cpu / max(1, a.load.replies)
        return per, per
    hash_cost = (a.cpu * fb - b.cpu * fa) / det
    full_cost = (ha * b.cpu - hb * a.cpu) / det
    return hash_cost, full_cost


def instrument_costs(calls: int = 200_000) -> dict[str, float]:
    """Seconds per call of what the metrics add on each path, timed in this process: a
    poll's two clock reads and tally, a request's tally, a command's counter and
    histogram."""
    from fleet_server._metrics import FleetMetrics

    metrics = FleetMetrics(
        census=lambda: (), streams=lambda _: 0, dropped=lambda _: 0, leads=lambda: True, version="0"
    )

    def timed(call: Callable[[], None], n: int) -> float:
        started = time.perf_counter()
        for _ in range(n):
            call()
        return (time.perf_counter() - started) / n

    def per_call(call: Callable[[], None], n: int = calls) -> float:
        """The best of 5 runs, less the loop's and the call's own cost."""
        empty = min(timed(lambda: None, n) for _ in range(5))
        return max(0.0, min(timed(call, n) for _ in range(5)) - empty)

    def poll() -> None:
        sent = time.monotonic()
        metrics.poll_rtt(time.monotonic() - sent)

    costs = {
        "added per poll (2 clock reads + RTT tally)": per_call(poll),
        "added per HTTP request (route/code tally)": per_call(
            lambda: metrics.http_request("/v1/rooms", 201)
        ),
        "added per command (counter + duration histogram)": per_call(
            lambda: metrics.command("create", "ok", 0.001), calls // 4
        ),
    }
    metrics.rtt_buckets()  # folds what the poll timing appended
    return costs


# --- scenarios --------------------------------------------------------------------------


class Bench:
    def __init__(self, sizes: Sizes, profiler: Profiler, quick: bool) -> None:
        self.sizes = sizes
        self.profiler = profiler
        self.quick = quick
        self.rows: list[Row] = []
        self.extra: dict[str, Any] = {}
        self._post_median: dict[int, float] = {}
        self._poll_cpu: dict[int, float] = {}
        self._floor_full: float | None = None

    def add(self, row: Row) -> None:
        self.rows.append(row)
        ratio = row.ratio
        log(
            f"{row.scenario}: {row.figure} = {_num(row.value)} {row.unit}"
            + (f" (floor {_num(row.floor)}, {ratio:.2f}×)" if ratio is not None else "")
            + ("" if row.ok is None else (" PASS" if row.ok else " FAIL"))
        )

    # 1. steady state, and the 10k side of the scaling ratios

    def steady(self) -> None:
        s = self.sizes
        n = s.steady_agents
        log(f"steady: orchestrator, {n} agents × {s.rooms} rooms, heartbeat {s.heartbeat_ms} ms")
        with (
            OrchestratorProcess(heartbeat_ms=s.heartbeat_ms) as orch,
            loadgen(orch.agent_url, s, n, rooms=s.rooms, deltas=False) as load,
        ):
            joined = load.wait_joined(timeout=60 + n / 100)
            orch.wait_instances(n, timeout=60)
            log(f"steady: {joined} agents joined, rss {orch.rss_bytes() / 2**20:.0f} MiB")
            time.sleep(s.settle_s)
            quiet = measure(orch, load, s.quiet_s, self.profiler, "steady-quiet")
            load.set(change_fraction=s.full_fraction)
            time.sleep(s.pause_s)
            full = measure(orch, load, s.full_s, self.profiler, "steady-full")
            load.set(change_fraction=0.0)
            time.sleep(s.pause_s)
            load.set(churn_per_s=s.churn * n * s.rooms)
            steady = measure(orch, load, s.steady_s, self.profiler, "steady-churn")
            load.set(churn_per_s=0.0)
            runner = orch.stats()
            time.sleep(s.pause_s)
            post = run_http(orch, post_create("steady"), concurrency=1, count=s.post_samples)
            self._post_median[n] = post.result.latency.quantile(0.5)
            self.extra["steady"] = {
                "quiet": quiet.load.summary(),
                "full": full.load.summary(),
                "churn": steady.load.summary(),
                "runner": runner,
                "cpu_rate": {
                    "quiet": quiet.cpu_rate,
                    "full": full.cpu_rate,
                    "churn": steady.cpu_rate,
                },
                "gc_s": {"quiet": quiet.gc, "full": full.gc, "churn": steady.gc},
                "loop_lag_p99_s": {
                    "quiet": quiet.loop_lag_p99,
                    "full": full.loop_lag_p99,
                    "churn": steady.loop_lag_p99,
                },
                "rss_mib": orch.rss_bytes() / 2**20,
            }
        hash_cost, full_cost = _solve(quiet, full)
        self._poll_cpu[n] = quiet.cpu / max(1, quiet.load.replies)

        log(f"steady: floor, {n} agents")
        floor_hash, floor_full, floor_p99 = self._ws_floor(n)
        self._floor_full = floor_full

        spurious = (
            int(runner["stale"].get("ok", 0)) + steady.load.evicted("ok") + steady.load.kicked("ok")
        )
        self.add(
            at_most(
                Row(
                    "steady",
                    f"spurious stale + evicted + kicked, {s.steady_s:g} s of {s.churn:.0%}/s churn",
                    spurious,
                    "",
                    note=f"errors {steady.load.error_count}",
                ),
                0,
            )
        )
        self.add(
            at_most(
                Row(
                    "steady",
                    "poll delay p99 (agent view)",
                    steady.load.lateness.quantile(0.99) * 1000,
                    "ms",
                    floor=floor_p99 * 1000,
                    note=f"p50 {steady.load.lateness.quantile(0.5) * 1000:.1f} ms, "
                    f"orchestrator loop lag p99 {steady.loop_lag_p99 * 1000:.0f} ms",
                ),
                100,
                "ms",
            )
        )
        self.add(
            at_most_ratio(
                Row(
                    "steady",
                    "orchestrator CPU per hash-only poll",
                    hash_cost * 1e6,
                    "µs",
                    floor=floor_hash * 1e6,
                    note=f"quiet fleet, all replies: {self._poll_cpu[n] * 1e6:.0f} µs/poll",
                ),
                2.0,
            )
        )
        self.add(
            at_most_ratio(
                Row(
                    "steady",
                    f"orchestrator CPU per full {s.rooms}-room snapshot",
                    full_cost * 1e6,
                    "µs",
                    floor=floor_full * 1e6,
                ),
                4.0,
            )
        )
        self.add(
            Row(
                "steady",
                f"orchestrator CPU share at {s.churn:.0%}/s churn",
                steady.cpu_rate * 100,
                "% of a core",
                note=f"{steady.load.replies / steady.wall:,.0f} polls/s, "
                f"GC {100 * steady.gc / max(steady.cpu, 1e-9):.0f}% of that CPU",
            )
        )

    def _ws_floor(self, agents: int) -> tuple[float, float, float]:
        """Floor CPU per hash-only and per full round trip, and the poll delay p99."""
        s = self.sizes
        with floor_process(s.heartbeat_ms) as floor:
            url = f"ws://{HOST}:{floor.port}/"
            with loadgen(url, s, agents, rooms=s.rooms) as load:
                load.wait_joined(timeout=60 + agents / 100)
                load.set(policy="hash")
                time.sleep(s.settle_s)
                quiet = measure(floor, load, s.quiet_s)
                load.set(policy="full")
                time.sleep(s.pause_s)
                full = measure(floor, load, s.full_s)
        return (
            quiet.cpu / max(1, quiet.load.replies),
            full.cpu / max(1, full.load.replies),
            quiet.load.lateness.quantile(0.99),
        )

    # 2. scaling: the small side of both ratios (the large side comes from steady)

    def scaling(self) -> None:
        s = self.sizes
        n = s.scaling_agents
        log(f"scaling: orchestrator, {n} agents × {s.rooms} rooms")
        with (
            OrchestratorProcess(heartbeat_ms=s.heartbeat_ms) as orch,
            loadgen(orch.agent_url, s, n, rooms=s.rooms, deltas=False) as load,
        ):
            load.wait_joined(timeout=60)
            orch.wait_instances(n, timeout=60)
            time.sleep(s.settle_s)
            quiet = measure(orch, load, s.quiet_s)
            load.set(change_fraction=s.full_fraction)
            time.sleep(s.pause_s)
            full = measure(orch, load, s.full_s)
        self._poll_cpu[n] = quiet.cpu / max(1, quiet.load.replies)
        _, full_cost = _solve(quiet, full)
        self.add(
            Row(
                "scaling",
                f"CPU per full {s.rooms}-room snapshot at {n:,} agents (loop not saturated)",
                full_cost * 1e6,
                "µs",
                floor=None if self._floor_full is None else self._floor_full * 1e6,
                note=f"{quiet.cpu_rate:.0%} → {full.cpu_rate:.0%} of a core",
            )
        )
        big = s.steady_agents
        if big in self._poll_cpu:
            self.add(
                at_most_ratio(
                    Row(
                        "scaling",
                        f"CPU per poll (quiet) at {big:,} agents, floor = at {n:,}",
                        self._poll_cpu[big] * 1e6,
                        "µs",
                        floor=self._poll_cpu[n] * 1e6,
                    ),
                    1.3,
                )
            )
        small = s.fleet_agents
        if big in self._post_median and small in self._post_median:
            self.add(
                at_most_ratio(
                    Row(
                        "scaling",
                        f"POST /v1/rooms median at {big:,} instances, floor = at {small}",
                        self._post_median[big] * 1000,
                        "ms",
                        floor=self._post_median[small] * 1000,
                    ),
                    1.3,
                )
            )

    # 3 + 4. reads and placement over a 100-agent fleet

    def fleet(self) -> None:
        s = self.sizes
        n = s.fleet_agents
        rooms = n * s.fleet_rooms
        stats_get = request_bytes("GET", "/v1/stats", headers=AUTH)
        rooms_get = request_bytes("GET", "/v1/rooms", headers=AUTH)
        log(f"reads/placement: orchestrator, {n} agents × {s.fleet_rooms} rooms")
        with (
            OrchestratorProcess(heartbeat_ms=s.heartbeat_ms) as orch,
            loadgen(orch.agent_url, s, n, rooms=s.fleet_rooms) as load,
        ):
            load.wait_joined(timeout=60)
            orch.wait_instances(n, timeout=60, rooms=rooms)
            time.sleep(s.settle_s)
            background = idle_rate(orch, s.idle_s)
            stats = run_http(
                orch,
                lambda _: stats_get,
                concurrency=16,
                duration=s.read_s,
                profiler=self.profiler,
                name="reads-stats",
            )
            stats_wrk = run_wrk(orch, "/v1/stats", AUTH, seconds=s.read_s)
            state_hash = json.loads(fetch(orch, "/v1/stats"))["data"]["stateHash"]
            tagged = request_bytes(
                "GET", "/v1/stats", headers={**AUTH, "If-None-Match": f'W/"{state_hash}"'}
            )
            not_modified = run_http(orch, lambda _: tagged, concurrency=16, duration=s.read_s)
            rooms_body = len(fetch(orch, "/v1/rooms"))
            room_list = run_http(
                orch,
                lambda _: rooms_get,
                concurrency=2,
                duration=s.read_s,
                background=background,
                profiler=self.profiler,
                name="reads-rooms",
            )
            post = run_http(orch, post_create("seq"), concurrency=1, count=s.post_samples)
            self._post_median[n] = post.result.latency.quantile(0.5)
            time.sleep(s.pause_s)
            place = run_http(
                orch,
                post_create("place"),
                concurrency=s.concurrency,
                duration=s.place_s,
                profiler=self.profiler,
                name="placement-100",
            )
            place_load = load.report()
        log(f"reads/placement: floor, {n} agents")
        with (
            floor_process(s.heartbeat_ms) as floor,
            loadgen(f"ws://{HOST}:{floor.port}/cmd", s, n, rooms=s.fleet_rooms) as load,
        ):
            load.wait_joined(timeout=60)
            time.sleep(s.pause_s)
            small_get = request_bytes("GET", "/small")
            small = run_http(floor, lambda _: small_get, concurrency=16, duration=s.read_s)
            small_wrk = run_wrk(floor, "/small", seconds=s.read_s)
            fbackground = idle_rate(floor, s.idle_s)
            blob_get = request_bytes("GET", f"/blob/{rooms_body}")
            blob = run_http(
                floor,
                lambda _: blob_get,
                concurrency=2,
                duration=s.read_s,
                background=fbackground,
            )
            rt_post = post_create("rt")

            def rt(index: int) -> bytes:
                return rt_post(index).replace(b"/v1/rooms", b"/rt", 1)

            floor_rt = run_http(floor, rt, concurrency=s.concurrency, duration=s.place_s)

        self.add(
            at_least_ratio(
                Row(
                    "reads",
                    "GET /v1/stats throughput",
                    stats.result.throughput,
                    "req/s",
                    floor=small.result.throughput,
                    note=f"{stats.cpu_per_request * 1e6:.0f} vs {small.cpu_per_request * 1e6:.0f} "
                    "µs CPU/request; floor: small JSON",
                ),
                0.8,
            )
        )
        self._wrk_rows(stats_wrk, small_wrk)
        self.add(
            at_least_ratio(
                Row(
                    "reads",
                    "GET /v1/stats 304 throughput",
                    not_modified.result.throughput if not_modified.result.non(304) == 0 else 0.0,
                    "req/s",
                    floor=small.result.throughput,
                    note="floor: small JSON",
                ),
                0.8,
            )
        )
        row = Row(
            "reads",
            f"GET /v1/rooms, {rooms:,} rooms, orchestrator CPU per request",
            room_list.cpu_per_request * 1000,
            "ms",
            floor=blob.cpu_per_request * 1000,
            note=f"{rooms_body / 1024:.0f} KiB; floor: same-size static body",
        )
        self.add(at_most(row, 1.0, "ms"))
        errors = place.result.non(201)
        self.add(
            at_least_ratio(
                Row(
                    "placement",
                    f"POST /v1/rooms ×{s.concurrency} over {n} agents, throughput",
                    place.result.throughput,
                    "creates/s",
                    floor=floor_rt.result.throughput,
                    note=f"errors {errors}; floor: HTTP + 1 WS round trip",
                ),
                0.5,
            )
        )
        self.add(
            at_most_ratio(
                Row(
                    "placement",
                    "POST /v1/rooms p99",
                    place.result.latency.quantile(0.99) * 1000,
                    "ms",
                    floor=floor_rt.result.latency.quantile(0.99) * 1000,
                ),
                3.0,
            )
        )
        self.add(
            at_most_ratio(
                Row(
                    "placement",
                    "orchestrator CPU per create",
                    place.cpu_per_request * 1e6,
                    "µs",
                    floor=floor_rt.cpu_per_request * 1e6,
                ),
                2.5,
            )
        )
        self.extra["fleet"] = {
            "post_sequential_median_ms": self._post_median[n] * 1000,
            "place_statuses": dict(place.result.statuses),
            "place_load": place_load.summary(),
            "stats_statuses": dict(stats.result.statuses),
            "stats_wrk": asdict(stats_wrk) if stats_wrk is not None else WRK_MISSING,
            "small_wrk": asdict(small_wrk) if small_wrk is not None else WRK_MISSING,
            "not_modified_statuses": dict(not_modified.result.statuses),
            "background_cpu_rate": background,
        }

    def _wrk_rows(self, stats: WrkRun | None, small: WrkRun | None) -> None:
        """``GET /v1/stats`` against the small-JSON floor, both driven by ``wrk``."""
        if stats is None or small is None:
            log(f"reads: {WRK_MISSING}; the wrk-driven row fails")
            figure = "GET /v1/stats throughput, wrk"
            self.add(Row("reads", figure, None, "req/s", target="≥ 0.8× floor", ok=False))
            self.rows[-1].note = WRK_MISSING
            return
        row = Row(
            "reads",
            "GET /v1/stats throughput, wrk",
            stats.throughput if stats.errors == 0 else 0.0,
            "req/s",
            floor=small.throughput,
            note=f"errors {stats.errors}; {stats.cpu_per_request * 1e6:.0f} vs "
            f"{small.cpu_per_request * 1e6:.0f} µs CPU/request; floor: small JSON, wrk "
            "-t1 -c16",
        )
        self.add(at_least_ratio(row, 0.8))

    def single(self) -> None:
        s = self.sizes
        log(f"single agent: orchestrator, ×{s.concurrency} creates for {s.single_s:g} s")
        with (
            OrchestratorProcess(heartbeat_ms=s.heartbeat_ms) as orch,
            loadgen(orch.agent_url, s, 1, rooms=0) as load,
        ):
            load.wait_joined(timeout=30)
            orch.wait_instances(1, timeout=30)
            load.reset()
            run = run_http(
                orch,
                post_create("one"),
                concurrency=s.concurrency,
                duration=s.single_s,
                profiler=self.profiler,
                name="placement-single",
            )
            report = load.report()
            runner = orch.stats()
        with (
            floor_process(s.heartbeat_ms) as floor,
            loadgen(f"ws://{HOST}:{floor.port}/cmd", s, 1, rooms=0) as load,
        ):
            load.wait_joined(timeout=30)
            rt_post = post_create("rt")
            floor_rt = run_http(
                floor,
                lambda i: rt_post(i).replace(b"/v1/rooms", b"/rt", 1),
                concurrency=s.concurrency,
                duration=min(s.single_s, 5.0),
            )
        errors = run.result.non(201)
        kicks = report.kicked("ok") + report.evicted("ok") + report.error_count
        self.add(
            at_least(
                Row(
                    "placement",
                    f"POST /v1/rooms ×{s.concurrency} on 1 agent, sustained {s.single_s:g} s",
                    run.result.throughput if errors == 0 and kicks == 0 else 0.0,
                    "creates/s",
                    floor=floor_rt.result.throughput,
                    note=f"errors {errors}, kicks {kicks}, p99 "
                    f"{run.result.latency.quantile(0.99) * 1000:.0f} ms",
                ),
                1000,
                "creates/s",
            )
        )
        self.extra["single"] = {
            "statuses": dict(run.result.statuses),
            "http_errors": dict(run.result.errors),
            "load": report.summary(),
            "runner": runner,
        }

    # 8. what the metrics cost: the same fleet and creates with metrics on and off

    def _metrics_round(self, on: bool, index: int) -> tuple[float, float, float]:
        """CPU per poll (quiet fleet), CPU per create, and CPU per scrape (on only)."""
        s = self.sizes
        extra = [] if on else ["--no-metrics"]
        side = "on" if on else "off"
        # creates on a small fleet, where the polls' background CPU is small and steady
        with (
            OrchestratorProcess(heartbeat_ms=s.heartbeat_ms, extra=extra) as orch,
            loadgen(orch.agent_url, s, 10, rooms=0) as load,
        ):
            load.wait_joined(timeout=30)
            orch.wait_instances(10, timeout=30)
            time.sleep(s.settle_s)
            creates = run_http(
                orch,
                post_create(f"m{index}{side}"),
                concurrency=s.concurrency,
                duration=s.metrics_create_s,
                background=idle_rate(orch, 1.0),
                profiler=self.profiler,
                name=f"metrics-{side}-create",
            )
        # polls and scrapes on a large quiet fleet
        with (
            OrchestratorProcess(heartbeat_ms=s.heartbeat_ms, extra=extra) as orch,
            loadgen(orch.agent_url, s, s.metrics_agents, rooms=s.rooms) as load,
        ):
            load.wait_joined(timeout=60 + s.metrics_agents / 100)
            orch.wait_instances(s.metrics_agents, timeout=60)
            time.sleep(s.settle_s)
            quiet = measure(orch, load, s.metrics_quiet_s, self.profiler, f"metrics-{side}-poll")
            scrape = 0.0
            if on:
                assert b"fleet_instances" in fetch(orch, "/metrics")
                raw = request_bytes("GET", "/metrics", headers=AUTH)
                scrapes = run_http(
                    orch, lambda _: raw, concurrency=1, count=20, background=quiet.cpu_rate
                )
                scrape = scrapes.cpu_per_request
        per_poll = quiet.cpu / max(1, quiet.load.replies)
        return per_poll, creates.cpu_per_request, scrape

    def metrics(self) -> None:
        s = self.sizes
        log(
            f"metrics: {s.metrics_rounds} × (on, off): polls at {s.metrics_agents} agents × "
            f"{s.rooms} rooms, creates ×{s.concurrency} over 10 agents"
        )
        figures: dict[bool, list[tuple[float, float, float]]] = {True: [], False: []}
        for index in range(s.metrics_rounds):
            for on in (True, False) if index % 2 == 0 else (False, True):
                figures[on].append(self._metrics_round(on, index))
        self.extra["metrics"] = {"on": figures[True], "off": figures[False]}

        def median(on: bool, column: int) -> float:
            values = sorted(row[column] for row in figures[on])
            return values[len(values) // 2]

        def paired(column: int) -> str:
            """Each round's on/off ratio: rounds run back to back, so drift cancels."""
            ratios = sorted(
                on[column] / off[column]
                for on, off in zip(figures[True], figures[False], strict=True)
                if off[column] > 0
            )
            return "per round " + ", ".join(f"{r:.2f}×" for r in ratios)

        for column, figure in ((0, "CPU per poll (quiet fleet)"), (1, "CPU per create")):
            self.add(
                at_most_ratio(
                    Row(
                        "metrics",
                        f"{figure}, metrics on; floor: metrics off",
                        median(True, column) * 1e6,
                        "µs",
                        floor=median(False, column) * 1e6,
                        note=f"medians of {s.metrics_rounds} alternated rounds; {paired(column)}",
                    ),
                    1.05,
                )
            )
        for figure, seconds in instrument_costs().items():
            self.add(Row("metrics", figure, seconds * 1e6, "µs", note="in-process, per call"))
        self.add(
            Row(
                "metrics",
                f"orchestrator CPU per GET /metrics at {s.metrics_agents} agents × {s.rooms} rooms",
                median(True, 2) * 1000,
                "ms",
            )
        )

    # 9. matchmaking (CONTRACT §11): seat reservations against creates and their floor,
    # and what unchanged room metadata costs the polls

    def seats(self) -> None:
        s = self.sizes
        n = s.fleet_agents
        rooms = n * s.fleet_rooms
        log(
            f"seats: orchestrator and floor, {n} agents × {s.fleet_rooms} rooms of "
            f"{s.room_seats} seats each; POST /v1/seats (without, then with a metadata "
            f"filter), POST /v1/rooms, the floor's round trips: ×{s.concurrency}, "
            f"{s.seats_s:g} s each"
        )
        grants = Grants()
        # The floor and its agents (which nobody polls) idle until the last burst.
        with (
            OrchestratorProcess(heartbeat_ms=s.heartbeat_ms) as orch,
            floor_process(s.heartbeat_ms) as floor,
            loadgen(
                orch.agent_url,
                s,
                n,
                rooms=s.fleet_rooms,
                room_max_connections=s.room_seats,
                room_metadata=ROOM_METADATA,
                room_metadata_unique=False,
            ) as load,
            loadgen(f"ws://{HOST}:{floor.port}/cmd", s, n, rooms=s.fleet_rooms) as floor_load,
        ):
            load.wait_joined(timeout=60)
            orch.wait_instances(n, timeout=60, rooms=rooms)
            floor_load.wait_joined(timeout=60)
            time.sleep(s.settle_s)
            over0, reserved0 = seat_counts(orch)
            reserve = run_http(
                orch,
                post_seats(),
                concurrency=s.concurrency,
                duration=s.seats_s,
                profiler=self.profiler,
                name="seats-reserve",
                on_response=grants,
            )
            filtered = run_http(
                orch,
                post_seats(metadata={"mode": ROOM_METADATA["mode"]}),
                concurrency=s.concurrency,
                duration=s.seats_s,
                profiler=self.profiler,
                name="seats-reserve-metadata",
                on_response=grants,
            )
            if grants.created:  # a created room's seats come with its agent's next snapshot
                time.sleep(s.tail_heartbeats * s.heartbeat_ms / 1000)
            over, reserved = seat_counts(orch)
            ids = grants.ids
            release = run_http(
                orch,
                lambda i: request_bytes("DELETE", f"/v1/seats/{ids[i]}", headers=AUTH),
                concurrency=s.concurrency,
                count=len(ids),
                duration=2 * s.seats_s,
            )
            _, left = seat_counts(orch)
            time.sleep(s.pause_s)
            creates = run_http(
                orch,
                post_create("seatc"),
                concurrency=s.concurrency,
                duration=s.seats_s,
                profiler=self.profiler,
                name="seats-create",
            )
            fleet_load = load.report()
            time.sleep(s.pause_s)
            rt_post = post_create("rt")
            floor_rt = run_http(
                floor,
                lambda i: rt_post(i).replace(b"/v1/rooms", b"/rt", 1),
                concurrency=s.concurrency,
                duration=s.seats_s,
            )

        statuses = reserve.result.statuses
        errors = reserve.result.non(200, 201)
        p99 = reserve.result.latency.quantile(0.99) * 1000
        self.add(
            Row(
                "seats",
                f"POST /v1/seats ×{s.concurrency}, 1–4 seats, over {n} agents "
                f"({rooms:,} rooms of {s.room_seats} seats), throughput",
                reserve.result.throughput,
                "reservations/s",
                floor=floor_rt.result.throughput,
                note=f"{statuses[200]:,} into a room (200), {statuses[201]:,} in a new room "
                f"(201), errors {errors}, p99 {p99:.1f} ms; floor: HTTP + 1 WS round trip",
            )
        )
        self.add(
            Row(
                "seats",
                f"POST /v1/seats ×{s.concurrency} throughput, floor = POST /v1/rooms "
                f"×{s.concurrency} on the same fleet",
                reserve.result.throughput,
                "reservations/s",
                floor=creates.result.throughput,
                note=f"creates: errors {creates.result.non(201)}, p99 "
                f"{creates.result.latency.quantile(0.99) * 1000:.1f} ms",
            )
        )
        self.add(
            Row(
                "seats",
                "orchestrator CPU per reservation",
                reserve.cpu_per_request * 1e6,
                "µs",
                floor=floor_rt.cpu_per_request * 1e6,
                note="floor: HTTP + 1 WS round trip",
            )
        )
        self.add(
            Row(
                "seats",
                "orchestrator CPU per reservation, floor = CPU per create on the same fleet",
                reserve.cpu_per_request * 1e6,
                "µs",
                floor=creates.cpu_per_request * 1e6,
                note=f"creates {creates.result.throughput:,.0f}/s at "
                f"{creates.cpu_per_request * 1e6:.0f} µs, "
                f"{creates.cpu_per_request / floor_rt.cpu_per_request:.2f}× the round trip",
            )
        )
        self.add(
            Row(
                "seats",
                "… with a metadata filter matching every room, CPU per reservation; "
                "floor: without the filter",
                filtered.cpu_per_request * 1e6,
                "µs",
                floor=reserve.cpu_per_request * 1e6,
                note=f"{filtered.result.throughput:,.0f} reservations/s, errors "
                f"{filtered.result.non(200, 201)}; one metadata text shared by every room",
            )
        )
        self.add(
            at_most(
                Row(
                    "seats",
                    "rooms over-committed after both bursts (connections + reserved > max)",
                    over,
                    "",
                    note=f"{reserved:,} seats reserved in the read model, {grants.seats:,} "
                    f"granted, {grants.created:,} of them in created rooms; before the "
                    f"bursts {reserved0:,} reserved, {over0} over",
                ),
                0,
            )
        )
        self.add(
            Row(
                "seats",
                "orchestrator CPU per DELETE /v1/seats/{id}",
                release.cpu_per_request * 1e6,
                "µs",
                note=f"{release.result.requests:,} of {len(ids):,} released at "
                f"{release.result.throughput:,.0f}/s, errors {release.result.non(200)}; "
                f"{left:,} seats still reserved after",
            )
        )
        self.extra["seats"] = {
            "reserve_statuses": dict(statuses),
            "reserve_errors": dict(reserve.result.errors),
            "filtered_statuses": dict(filtered.result.statuses),
            "filtered_p99_ms": filtered.result.latency.quantile(0.99) * 1000,
            "reserve_p50_ms": reserve.result.latency.quantile(0.5) * 1000,
            "reserve_p99_ms": p99,
            "granted": {"reservations": len(ids), "seats": grants.seats, "created": grants.created},
            "reserved_after_burst": reserved,
            "over_committed": over,
            "release_statuses": dict(release.result.statuses),
            "reserved_after_release": left,
            "create_statuses": dict(creates.result.statuses),
            "create_p99_ms": creates.result.latency.quantile(0.99) * 1000,
            "floor_rt": {
                "per_s": floor_rt.result.throughput,
                "cpu_us": floor_rt.cpu_per_request * 1e6,
            },
            "fleet_load": fleet_load.summary(),
        }

    def seat_polls(self) -> None:
        s = self.sizes
        n = s.seats_poll_agents
        log(
            f"seats: two quiet fleets of {n} agents × {s.rooms} rooms, one with metadata on "
            f"every room; {s.seats_rounds} alternated rounds of a {s.seats_quiet_s:g} s quiet, "
            f"a {s.seats_window_s:g} s hash-only and a {s.seats_window_s:g} s full window each"
        )
        # per side, one row per round: CPU per poll quiet, per hash-only reply, per full
        # reply, and the share of full replies in the quiet window
        figures: dict[str, list[tuple[float, float, float, float]]] = {"none": [], "metadata": []}
        with (
            OrchestratorProcess(heartbeat_ms=s.heartbeat_ms) as plain,
            OrchestratorProcess(heartbeat_ms=s.heartbeat_ms) as tagged,
            loadgen(plain.agent_url, s, n, rooms=s.rooms) as plain_load,
            loadgen(
                tagged.agent_url, s, n, rooms=s.rooms, room_metadata=ROOM_METADATA
            ) as tagged_load,
        ):
            sides = {"none": (plain, plain_load), "metadata": (tagged, tagged_load)}
            for orch, load in sides.values():
                load.wait_joined(timeout=60 + n / 100)
                orch.wait_instances(n, timeout=60, rooms=n * s.rooms)
            probe = json.loads(fetch(tagged, "/v1/rooms?metadata=room:r0-0-0"))["data"]
            if not probe or probe[0]["metadata"].get("mode") != ROOM_METADATA["mode"]:
                raise RuntimeError(f"the fleet does not report its metadata: {probe!r}")
            time.sleep(s.settle_s)
            for i in range(s.seats_rounds):
                for side in ("none", "metadata") if i % 2 == 0 else ("metadata", "none"):
                    orch, load = sides[side]
                    time.sleep(s.pause_s)
                    quiet = measure(orch, load, s.seats_quiet_s, self.profiler, f"seats-{side}-{i}")
                    forced: dict[str, Window] = {}
                    for policy in ("hash", "full"):
                        load.set(policy=policy)
                        time.sleep(s.pause_s)
                        forced[policy] = measure(
                            orch,
                            load,
                            s.seats_window_s,
                            self.profiler,
                            f"seats-{side}-{policy}-{i}",
                        )
                    load.set(policy="auto")
                    figures[side].append(
                        (
                            quiet.cpu / max(1, quiet.load.replies),
                            forced["hash"].cpu / max(1, forced["hash"].load.replies),
                            forced["full"].cpu / max(1, forced["full"].load.replies),
                            quiet.load.replies_full / max(1, quiet.load.replies),
                        )
                    )
        self.extra["seat_polls"] = figures

        def median(side: str, column: int) -> float:
            return statistics.median(row[column] for row in figures[side])

        def paired(column: int) -> str:
            """Each round's with/without ratio: the two windows ran back to back."""
            ratios = [
                tagged[column] / plain[column]
                for tagged, plain in zip(figures["metadata"], figures["none"], strict=True)
                if plain[column] > 0
            ]
            return f"medians of {s.seats_rounds} alternated rounds, per round " + ", ".join(
                f"{r:.2f}×" for r in ratios
            )

        fleet = f"{n:,} agents × {s.rooms} rooms"
        self.add(
            at_most_ratio(
                Row(
                    "seats",
                    f"CPU per hash-only poll (every reply hash-only), {fleet}, every room with "
                    "metadata; floor: the same fleet without",
                    median("metadata", 1) * 1e6,
                    "µs",
                    floor=median("none", 1) * 1e6,
                    note=paired(1),
                ),
                1.1,
            )
        )
        self.add(
            at_most_ratio(
                Row(
                    "seats",
                    "CPU per poll of the quiet fleet (the forced full replies included), with "
                    "metadata; floor: without",
                    median("metadata", 0) * 1e6,
                    "µs",
                    floor=median("none", 0) * 1e6,
                    note=f"{paired(0)}; {median('metadata', 3):.1%} of the replies full",
                ),
                1.1,
            )
        )
        self.add(
            Row(
                "seats",
                f"CPU per unchanged full {s.rooms}-room reply, with metadata; floor: without",
                median("metadata", 2) * 1e6,
                "µs",
                floor=median("none", 2) * 1e6,
                note=f"{paired(2)}; {n * s.rooms:,} distinct metadata texts",
            )
        )

    # 4b + 5. a 200,000-room fleet: memory, and the filtered list read

    def memory(self) -> None:
        s = self.sizes
        n = s.memory_agents
        rooms = n * s.memory_rooms
        log(f"memory: orchestrator, {n} agents, then {rooms:,} rooms")
        with (
            OrchestratorProcess(heartbeat_ms=s.heartbeat_ms) as orch,
            loadgen(orch.agent_url, s, n, rooms=0, room_types=("match", "lobby")) as load,
        ):
            load.wait_joined(timeout=60)
            orch.wait_instances(n, timeout=60)
            time.sleep(s.settle_s)
            orch.command("gc")
            rss0 = orch.rss_bytes()
            load.set(add_rooms=s.memory_rooms)
            if not orch.wait_instances(n, timeout=120, rooms=rooms):
                log("memory: the fleet never reached its room count")
            time.sleep(s.settle_s + s.tail_heartbeats * s.heartbeat_ms / 1000)
            orch.command("gc")
            rss1 = orch.rss_bytes()
            background = idle_rate(orch, s.idle_s)
            body = fetch(orch, "/v1/rooms?type=match")
            typed_get = request_bytes("GET", "/v1/rooms?type=match", headers=AUTH)
            typed = run_http(
                orch,
                lambda _: typed_get,
                concurrency=1,
                count=s.type_reads,
                background=background,
                profiler=self.profiler,
                name="reads-rooms-type",
            )
        listed = json.loads(body)["data"]
        encode_times = []
        for _ in range(3):
            started = time.perf_counter()
            json.dumps(
                {"status": "OK", "data": listed, "count": len(listed)},
                separators=(",", ":"),
                ensure_ascii=False,
            ).encode()
            encode_times.append(time.perf_counter() - started)
        encode = min(encode_times)
        self.add(
            at_most(
                Row(
                    "memory",
                    f"orchestrator RSS growth per room at {rooms:,} rooms",
                    (rss1 - rss0) / rooms,
                    "B/room",
                    note=f"{rss0 / 2**20:.0f} → {rss1 / 2**20:.0f} MiB",
                ),
                1024,
                "B/room",
            )
        )
        self.add(
            at_most_ratio(
                Row(
                    "reads",
                    f"GET /v1/rooms?type=match ({len(listed):,} of {rooms:,} rooms), CPU/request",
                    typed.cpu_per_request * 1000,
                    "ms",
                    floor=encode * 1000,
                    note=f"latency p50 {typed.result.latency.quantile(0.5) * 1000:.0f} ms; "
                    "floor: stdlib json encode of the list",
                ),
                2.0,
            )
        )

    # 6. event streams

    def streams(self) -> None:
        for i, rate in enumerate(self.sizes.event_rates):
            self._streams_at(rate, latency_target=i == 0)

    def _streams_at(self, rate: float, *, latency_target: bool) -> None:
        s = self.sizes
        n = s.fleet_agents
        log(
            f"streams: orchestrator, {s.sse_streams} SSE + {s.grpc_streams} gRPC streams, "
            f"{rate:g} room events/s"
        )
        with (
            OrchestratorProcess(
                heartbeat_ms=s.heartbeat_ms, grpc=True, extra=["--count-events"]
            ) as orch,
            loadgen(orch.agent_url, s, n, rooms=s.rooms) as load,
        ):
            load.wait_joined(timeout=60)
            orch.wait_instances(n, timeout=60)
            time.sleep(s.settle_s)
            sse_config = StreamsConfig(
                host=HOST, port=orch.port, sse=s.sse_streams, admin_key=ADMIN_KEY
            )
            grpc_config = StreamsConfig(
                host=HOST,
                port=orch.port,
                sse=0,
                grpc_port=orch.grpc_port,
                grpc=s.grpc_streams,
                admin_key=ADMIN_KEY,
            )
            with consumers(sse_config) as sse, consumers(grpc_config) as watch:
                sse.wait_open(s.sse_streams)
                watch.wait_open(s.grpc_streams)
                time.sleep(s.pause_s)
                sse.report(reset=True)
                watch.report(reset=True)
                orch.reset()
                load.reset()
                cpu0 = orch.cpu_seconds()
                started = time.monotonic()
                load.set(replace_per_s=rate / 2)
                with self.profiler.phase(f"streams-{rate:g}", orch.pid, s.stream_s):
                    time.sleep(s.stream_s)
                load.set(replace_per_s=0.0)
                wall = time.monotonic() - started
                time.sleep(s.tail_heartbeats * s.heartbeat_ms / 1000 + s.pause_s)
                cpu = orch.cpu_seconds() - cpu0
                # Late is not missed: wait (up to 15 s) until the consumers stop receiving.
                sse_report, grpc_report = settled_reports(sse, watch)
                runner = orch.stats()
                churn = load.report()
        emitted: dict[str, int] = runner["events"]
        missed = {
            kind: sum(
                max(0, total - int(counts.get(event, 0)))
                for counts in report[kind]
                for event, total in emitted.items()
            )
            for kind, report in (("sse", sse_report), ("grpc", grpc_report))
        }
        streams = len(sse_report["sse"]) + len(grpc_report["grpc"])
        sse_latency = Histogram.from_state(sse_report["latency"])
        grpc_latency = Histogram.from_state(grpc_report["latency"])
        events = sum(emitted.values())
        errors = sse_report["errors"] + grpc_report["errors"]
        log(f"streams: floor, {s.sse_streams} SSE streams at {rate:g} events/s")
        floor_p99: float | None = None
        with floor_process(s.heartbeat_ms, sse_rate=rate) as floor:
            config = StreamsConfig(host=HOST, port=floor.port, sse=s.sse_streams, path="/events")
            with consumers(config) as floor_streams:
                try:  # the floor streams from the first connection: slow to open when busy
                    floor_streams.wait_open(s.sse_streams, timeout=60)
                except TimeoutError:
                    log("streams: the floor's streams did not open; no floor figure")
                else:
                    time.sleep(s.pause_s)
                    floor_streams.report(reset=True)
                    time.sleep(s.stream_s)
                    floor_report = floor_streams.report()
                    floor_p99 = Histogram.from_state(floor_report["latency"]).quantile(0.99)
        at = f"{rate:,.0f} events/s"
        self.add(
            at_most(
                Row(
                    "streams",
                    f"events missed over {streams} streams at {at}",
                    missed["sse"] + missed["grpc"],
                    "",
                    note=f"{events / wall:,.0f} events/s emitted ({churn.rooms_created:,} "
                    f"creates); SSE {missed['sse']:,}, gRPC {missed['grpc']:,}; "
                    f"streams ended {sse_report['ended'] + grpc_report['ended']}, "
                    f"errors {len(errors)}",
                ),
                0,
            )
        )
        sse_row = Row(
            "streams",
            f"SSE delivery p99, {s.sse_streams} streams at {at} (agent reply → client)",
            sse_latency.quantile(0.99) * 1000,
            "ms",
            floor=None if floor_p99 is None else floor_p99 * 1000,
            note=f"p50 {sse_latency.quantile(0.5) * 1000:.1f} ms, orchestrator "
            f"{100 * cpu / wall:.0f}% of a core; floor: bare SSE fan-out",
        )
        self.add(at_most(sse_row, s.sse_p99_ms, "ms") if latency_target else sse_row)
        grpc_row = Row(
            "streams",
            f"gRPC WatchEvents delivery p99, {s.grpc_streams} streams at {at}",
            grpc_latency.quantile(0.99) * 1000,
            "ms",
            note=f"p50 {grpc_latency.quantile(0.5) * 1000:.1f} ms",
        )
        self.add(at_most(grpc_row, 100, "ms") if latency_target else grpc_row)
        self.extra[f"streams-{rate:g}"] = {
            "emitted": emitted,
            "missed": missed,
            "errors": errors,
            "ended": sse_report["ended"] + grpc_report["ended"],
            "samples": {"sse": sse_latency.count, "grpc": grpc_latency.count},
            "consumer_cpu_s": {"sse": sse_report.get("cpu_s"), "grpc": grpc_report.get("cpu_s")},
            "orchestrator_cpu_share": cpu / wall,
            "runner_gc": runner.get("gc"),
        }

    # 7. takeover: SIGKILL the leader of a cluster on etcd, time what follows

    def takeover(self) -> None:
        for agents in self.sizes.takeover_agents:
            self._takeover(agents)

    def _takeover(self, n: int) -> None:
        s = self.sizes
        log(
            f"takeover: {s.takeover_nodes} orchestrators on etcd (lease {s.lease_ms} ms), "
            f"{n:,} agents × {s.rooms} rooms"
        )
        with (
            OrchestratorCluster(
                s.takeover_nodes,
                heartbeat_ms=s.heartbeat_ms,
                lease_ms=s.lease_ms,
                extra=["--settle-ms", str(s.settle_ms)],
            ) as cluster,
            contextlib.ExitStack() as logs,
        ):
            for index, node in enumerate(cluster.nodes):  # kept even if the run fails
                logs.callback(
                    self.profiler.save_log, f"takeover-{n}-node{index}-pid{node.pid}", node
                )
            first_leader = cluster.wait_leader()
            first_leader.reset()
            join_started = time.monotonic()
            with loadgen(
                cluster.agent_urls, s, n, rooms=s.rooms, connect_concurrency=s.takeover_connects
            ) as load:
                profile = self.profiler.start(f"takeover-{n}-join", first_leader.pid, 120 + n / 50)
                joined = load.wait_joined(timeout=max(60 + n / 100, s.takeover_timeout_s))
                join_s = time.monotonic() - join_started
                if profile is not None:
                    profile.stop()
                first_leader.wait_instances(n, timeout=60)
                join = first_leader.stats()
                join_downs = _step_downs([join])
                log(
                    f"takeover: {joined:,} agents joined in {join_s:.1f} s; first leader's loop "
                    f"lag p99 {join['loop_lag_ms']['p99']} ms, max {join['loop_lag_ms']['max']} ms"
                    f", step-downs {join_downs}"
                )
                cluster.wait_recorded(n)
                time.sleep(s.settle_s)
                # Whoever leads now (a leader that starved its lease has stepped down).
                leader = cluster.wait_leader()
                before = int(leader.stats()["instances"])
                recorded = cluster.recorded_processes()
                log(f"takeover: {before:,} instances on the leader, {recorded:,} in the record")
                others = [node for node in cluster.live if node is not leader]
                for node in others:
                    node.reset()
                cpu0 = {base_url(node): node.cpu_seconds() for node in others}
                load.reset()
                started = time.monotonic()
                leader.proc.kill()
                storm = {
                    base_url(node): self.profiler.start(
                        f"takeover-{n}-storm-{node.pid}", node.pid, s.takeover_timeout_s
                    )
                    for node in others
                }
                survivors = [base_url(node) for node in others]
                times = asyncio.run(watch_takeover(survivors, n, started, s.takeover_timeout_s))
                report = load.report()
                wall = time.monotonic() - started
                runners = {base_url(node): node.stats() for node in others}
                cpu = {base_url(node): node.cpu_seconds() - cpu0[base_url(node)] for node in others}
                for url, recording in storm.items():
                    if recording is not None:  # the new leader's as -storm, the other's as -standby
                        role = "storm" if url == times.leader_url else "storm-standby"
                        recording.stop(rename=f"takeover-{n}-{role}")
        new_leader = runners.get(times.leader_url or "", {})
        leader_cpu = cpu.get(times.leader_url or "", 0.0)
        lag = new_leader.get("loop_lag_ms", {})
        gc_longest = new_leader.get("gc", {}).get("longest_ms", ["—"] * 3)
        step_downs = _step_downs(runners.values())
        label = f"{n:,} agents"
        self.add(
            Row(
                "takeover",
                f"SIGKILL of the leader → a node leads, {label}",
                times.leader,
                "s",
                note=f"{s.takeover_nodes} nodes, leader_lease_ms {s.lease_ms:,}; "
                f"{before:,} instances on the leader killed"
                + ("" if first_leader is leader else " (not the first leader)")
                + f"; the join: {joined:,} agents in {join_s:.1f} s, first leader's loop lag "
                f"p99 {join['loop_lag_ms']['p99']} ms, max {join['loop_lag_ms']['max']} ms, "
                f"its step-downs {join_downs}",
            )
        )
        first = "—" if times.first_back is None else f"{times.first_back:.2f} s"
        self.add(
            Row(
                "takeover",
                f"… all {label} back in the new leader's read model",
                times.all_back,
                "s",
                note=f"first at {first}, "
                + ", ".join(f"{share} at {t:.1f} s" for share, t in times.back.items())
                + f"; {times.instances:,} instances at the end; new "
                f"leader's loop lag p99 {lag.get('p99', '—')} ms, max {lag.get('max', '—')} ms, "
                f"longest full GC {gc_longest[2]} ms, "
                f"upgrades refused while joining {new_leader.get('refused_joining', '—')}; "
                f"step-downs after the kill {step_downs} ({report.closed('ok', 4010):,} "
                f"agents closed with 4010); CPU from the kill on: new leader "
                f"{100 * leader_cpu / wall:.0f}%, load generator {100 * report.cpu_s / wall:.0f}% "
                "of a core",
            )
        )
        self.add(
            Row(
                "takeover",
                f"… first generated-id create succeeds, {label}",
                times.generated_create,
                "s",
            )
        )
        settled = "—" if times.settled is None else f"{times.settled:.2f} s"
        self.add(
            Row(
                "takeover",
                f"… first explicit-id create succeeds (after settling), {label}",
                times.explicit_create,
                "s",
                note=f"settled at {settled}; {recorded:,} processes in the record, "
                f"settle_ms {s.settle_ms:,}",
            )
        )
        self.extra[f"takeover-{n}"] = {
            "join": {"seconds": join_s, "first_leader": join},
            "times": times.summary(),
            "recorded": recorded,
            "load": report.summary(),
            "survivors": runners,
            "survivor_cpu_s": cpu,
            "wall_s": wall,
        }

    # 8. the create path with leader election on: an HA leader against a single node

    def ha(self) -> None:
        s = self.sizes
        n = s.fleet_agents
        log(
            f"ha: a single node and an HA pair on etcd, {n} agents × {s.fleet_rooms} rooms "
            f"each; {s.ha_rounds} pairs of {s.ha_burst_s:g} s bursts of POST /v1/rooms "
            f"×{s.concurrency}, one on each"
        )
        runs: dict[str, list[HttpRun]] = {"single": [], "ha": []}
        etcd_cpu = 0.0
        with (
            OrchestratorProcess(heartbeat_ms=s.heartbeat_ms) as single,
            OrchestratorCluster(
                2, heartbeat_ms=s.heartbeat_ms, lease_ms=s.lease_ms, name="ha"
            ) as cluster,
        ):
            leader = cluster.wait_leader()
            targets = {"single": single, "ha": leader}
            etcd_pid = cluster.etcd.pid
            assert etcd_pid is not None
            with (
                loadgen(single.agent_url, s, n, rooms=s.fleet_rooms) as single_load,
                loadgen(cluster.agent_urls, s, n, rooms=s.fleet_rooms) as ha_load,
            ):
                for load, orch in ((single_load, single), (ha_load, leader)):
                    load.wait_joined(timeout=60)
                    orch.wait_instances(n, timeout=60, rooms=n * s.fleet_rooms)
                time.sleep(s.settle_s)
                idle = {which: idle_rate(orch, s.idle_s) for which, orch in targets.items()}
                for which, orch in targets.items():  # warm both up, unmeasured
                    run_http(
                        orch, post_create(f"warm-{which}"), concurrency=s.concurrency, count=500
                    )
                # Pairs in the order AB BA AB …: rooms pile up on both sides alike, and
                # each pair shares the machine's load of its moment.
                for i in range(s.ha_rounds):
                    for which in ("single", "ha") if i % 2 == 0 else ("ha", "single"):
                        time.sleep(s.pause_s)
                        etcd0 = cpu_seconds(etcd_pid) if which == "ha" else 0.0
                        runs[which].append(
                            run_http(
                                targets[which],
                                post_create(f"{which}{i}"),
                                concurrency=s.concurrency,
                                duration=s.ha_burst_s,
                                profiler=self.profiler,
                                name=f"ha-{which}-{i}",
                            )
                        )
                        if which == "ha":
                            etcd_cpu += cpu_seconds(etcd_pid) - etcd0
        errors = sum(run.result.non(201) for both in runs.values() for run in both)
        cpu = {k: [run.cpu_per_request * 1e6 for run in v] for k, v in runs.items()}
        rate = {k: [run.result.throughput for run in v] for k, v in runs.items()}
        cpu_pairs = [h / o for h, o in zip(cpu["ha"], cpu["single"], strict=True)]
        rate_pairs = [h / o for h, o in zip(rate["ha"], rate["single"], strict=True)]
        ha_creates = sum(run.result.requests for run in runs["ha"])
        self.add(
            at_most_ratio(
                Row(
                    "ha",
                    "orchestrator CPU per create, HA leader (etcd on), floor = single node",
                    statistics.median(cpu["ha"]),
                    "µs",
                    floor=statistics.median(cpu["single"]),
                    note=f"medians of {s.ha_rounds}; HA {_span(cpu['ha'])}, single "
                    f"{_span(cpu['single'])} µs, ratio per pair {_span(cpu_pairs)}; etcd "
                    f"{1e6 * etcd_cpu / max(1, ha_creates):.1f} µs/create",
                ),
                1.05,
            )
        )
        self.add(
            at_least_ratio(
                Row(
                    "ha",
                    f"POST /v1/rooms ×{s.concurrency} over {n} agents, HA leader, floor = single",
                    statistics.median(rate["ha"]),
                    "creates/s",
                    floor=statistics.median(rate["single"]),
                    note=f"HA {_span(rate['ha'])}, single {_span(rate['single'])}, ratio per "
                    f"pair {_span(rate_pairs)}; errors {errors}; idle (polls, keepalives): HA "
                    f"{100 * idle['ha']:.1f}%, single {100 * idle['single']:.1f}% of a core",
                ),
                0.95,
            )
        )
        self.extra["ha"] = {
            "cpu_per_create_us": cpu,
            "creates_per_s": rate,
            "cpu_ratio_per_pair": cpu_pairs,
            "rate_ratio_per_pair": rate_pairs,
            "errors": errors,
            "etcd_cpu_s": etcd_cpu,
            "idle_cpu_rate": idle,
        }


class Consumers:
    """A stream-consumer process (:mod:`tools.loadgen._streams`)."""

    def __init__(self, config: StreamsConfig) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._proc = context.Process(target=streams_main, args=(child, config), daemon=True)
        self._proc.start()
        child.close()

    def _ask(self, message: dict[str, Any]) -> dict[str, Any]:
        self._conn.send(message)
        if not self._conn.poll(60):
            raise TimeoutError("stream consumers did not answer")
        reply: dict[str, Any] = self._conn.recv()
        return reply

    def wait_open(self, count: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while self._ask({"op": "status"})["open"] < count:
            if time.monotonic() > deadline:
                raise TimeoutError("event streams did not open")
            time.sleep(0.1)

    def report(self, reset: bool = False) -> dict[str, Any]:
        return self._ask({"op": "report", "reset": reset})

    def close(self) -> None:
        with contextlib.suppress(OSError, EOFError, TimeoutError):
            self._ask({"op": "stop"})
        self._proc.join(10)
        if self._proc.is_alive():
            self._proc.terminate()
            self._proc.join(5)
        self._conn.close()


@contextlib.contextmanager
def consumers(config: StreamsConfig) -> Iterator[Consumers]:
    c = Consumers(config)
    try:
        yield c
    finally:
        c.close()


def settled_reports(
    *groups: Consumers, quiet_s: float = 1.0, limit_s: float = 15.0
) -> list[dict[str, Any]]:
    """The consumers' reports once their event counts stop growing for ``quiet_s`` (at
    most ``limit_s``): what is still missing then was lost, not late."""

    def received(report: dict[str, Any]) -> int:
        return sum(sum(c.values()) for c in report["sse"] + report["grpc"])

    deadline = time.monotonic() + limit_s
    reports = [g.report() for g in groups]
    while time.monotonic() < deadline:
        time.sleep(quiet_s)
        again = [g.report() for g in groups]
        if [received(r) for r in again] == [received(r) for r in reports]:
            return again
        reports = again
    return reports


# --- main -------------------------------------------------------------------------------


def host_cpu() -> tuple[float, float]:
    """Busy and steal CPU seconds of the whole machine so far (``/proc/stat``)."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    ticks = os.sysconf("SC_CLK_TCK")
    return (user + nice + system + irq + softirq) / ticks, steal / ticks


def own_cpu() -> float:
    """CPU seconds of this process and every child it has reaped (all of ours, between
    scenarios: each scenario ends its servers, workers and profilers)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


@dataclass
class Noise:
    """CPU that processes outside this benchmark used during a scenario."""

    scenario: str
    wall: float
    foreign: float
    steal: float


@contextlib.contextmanager
def watch_noise(scenario: str, noise: list[Noise]) -> Iterator[None]:
    started = time.monotonic()
    busy0, steal0 = host_cpu()
    own0 = own_cpu()
    try:
        yield
    finally:
        busy1, steal1 = host_cpu()
        foreign = max(0.0, (busy1 - busy0) - (own_cpu() - own0))
        noise.append(Noise(scenario, time.monotonic() - started, foreign, steal1 - steal0))


SCENARIOS: Final = (
    "steady",
    "scaling",
    "reads",
    "placement",
    "single",
    "memory",
    "streams",
    "metrics",
    "takeover",
    "ha",
    "seats",
    "agent",
    "bigagent",
    "scale18k",
)


def machine() -> dict[str, str]:
    model = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": str(os.cpu_count()),
        "cpu": model,
        "python": platform.python_version(),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python tools/bench.py", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="scaled-down sizes, about 2 minutes")
    parser.add_argument(
        "--only", action="append", choices=SCENARIOS, help="run only these scenarios"
    )
    parser.add_argument("--profile", type=Path, help="py-spy profiles of each phase into DIR")
    parser.add_argument("--json", type=Path, help="write the rows and details as JSON")
    parser.add_argument(
        "--takeover-agents",
        type=int,
        action="append",
        metavar="N",
        help="fleet sizes of the takeover scenario (repeatable; default 1,000 and 10,000)",
    )
    parser.add_argument(
        "--takeover-timeout",
        type=float,
        metavar="S",
        help="how long the takeover scenario watches after the kill (default 120 s), and "
        "waits at least for the fleet to join before it",
    )
    parser.add_argument(
        "--full-replies",
        action="store_true",
        help="the stand-in agents never answer with a delta (as agents older than deltas)",
    )
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else Sizes()
    if args.full_replies:
        sizes = replace(sizes, deltas=False)
    if args.takeover_agents:
        sizes = replace(sizes, takeover_agents=tuple(args.takeover_agents))
    if args.takeover_timeout:
        sizes = replace(sizes, takeover_timeout_s=args.takeover_timeout)
    if "BENCH_TAKEOVER_CONNECTS" in os.environ:  # what-if: handshakes in flight per worker
        sizes = replace(sizes, takeover_connects=int(os.environ["BENCH_TAKEOVER_CONNECTS"]))
    wanted = set(args.only or SCENARIOS)
    from tools import bench_agent, bench_big_agent  # import this module: not at the top

    bench = Bench(sizes, Profiler(args.profile), args.quick)
    started = time.monotonic()
    info = machine()
    log(f"{'quick' if args.quick else 'full'} run on {info}")
    noise: list[Noise] = []
    plan: list[tuple[str, bool, Callable[[], None]]] = [
        ("steady", bool(wanted & {"steady", "scaling"}), bench.steady),
        ("reads/placement", bool(wanted & {"reads", "placement", "scaling"}), bench.fleet),
        ("scaling", "scaling" in wanted, bench.scaling),
        ("single agent", bool(wanted & {"single", "placement"}), bench.single),
        ("memory", bool(wanted & {"memory", "reads"}), bench.memory),
        ("streams", "streams" in wanted, bench.streams),
        ("metrics", "metrics" in wanted, bench.metrics),
        ("takeover", "takeover" in wanted, bench.takeover),
        ("ha", "ha" in wanted, bench.ha),
        ("seats", "seats" in wanted, bench.seats),
        ("seats (metadata polls)", "seats" in wanted, bench.seat_polls),
        ("agent", "agent" in wanted, lambda: bench_agent.agent(bench)),
        ("bigagent", "bigagent" in wanted, lambda: bench_big_agent.big_agent(bench)),
        ("scale18k", "scale18k" in wanted, lambda: scale18k(bench)),
    ]
    for name, run, scenario in plan:
        if run:
            with watch_noise(name, noise):
                scenario()
    order = {
        name: i
        for i, name in enumerate(
            (
                "steady",
                "scaling",
                "placement",
                "reads",
                "memory",
                "streams",
                "metrics",
                "takeover",
                "ha",
                "seats",
                "agent",
                "bigagent",
                "scale18k",
            )
        )
    }
    rows = sorted(bench.rows, key=lambda r: order.get(r.scenario, 99))
    elapsed = time.monotonic() - started
    print(
        f"\nrivalis-fleet bench ({'quick' if args.quick else 'full'}) — {info['date']}, "
        f"{info['nproc']} × {info['cpu']}, Python {info['python']}, {elapsed:.0f} s\n"
    )
    print(table(rows))
    failed = [r for r in rows if r.ok is False]
    print(
        f"\n{len(rows) - len(failed)} of {len(rows)} figures pass"
        + ("" if not failed else f", {len(failed)} fail")
    )
    noisy = [n for n in noise if n.foreign / n.wall > 0.05 or n.steal / n.wall > 0.05]
    for n in noisy:
        print(
            f"machine noise during {n.scenario}: other processes used "
            f"{n.foreign / n.wall:.2f} cores on average, hypervisor steal "
            f"{n.steal / n.wall:.2f} cores ({n.wall:.0f} s)"
        )
    if not noisy:
        print("machine noise: none (other processes < 0.05 cores during every scenario)")
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                {
                    "machine": info,
                    "mode": "quick" if args.quick else "full",
                    "sizes": asdict(sizes),
                    "elapsed_s": elapsed,
                    "rows": [{**asdict(r), "ratio": r.ratio} for r in rows],
                    "details": bench.extra,
                    "noise": [asdict(n) for n in noise],
                },
                indent=2,
                default=str,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
