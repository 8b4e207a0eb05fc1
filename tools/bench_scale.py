"""The ``scale18k`` bench scenario: 18,000 agents × 20 rooms (360,000 rooms) at the
default heartbeat (5,000 ms) under 1 %/s room churn, against 1,000 agents run the
same way in the same run.

Rows: spurious stale + evicted + kicked (≤ 0), the orchestrator's loop stall max (how
late a 50 ms timer fired at worst, ≤ 50 ms), the agents' poll delay p99 (≤ 100 ms), and
CPU per poll against the 1,000-agent figure (≤ 1.3×), with the CPU that 50,000 agents
at that heartbeat would need at the measured cost per poll. 18,000 agents is what a
20,000-descriptor hard limit per process allows (the orchestrator and the load
generator raise their soft limit to it). ``--quick`` runs 2,000 against 200 agents.

Hooked into ``tools/bench.py`` as ``--only scale18k``; the orchestrator runs with
``--poll-spread`` (polls sent per 10 ms: how the links' timers bunch up), and with
``--stall-report-ms 50`` when profiling (the loop thread's stack at every stall, kept
as ``DIR/scale18k.log`` next to the py-spy profiles).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from tools.loadgen import OrchestratorProcess

if TYPE_CHECKING:
    from tools.bench import Bench, Window

__all__ = ["SCALE", "SCALE_QUICK", "ScaleSizes", "scale18k"]

PROJECTED_AGENTS: Final = 50_000


@dataclass(frozen=True)
class ScaleSizes:
    agents: int = 18_000
    reference_agents: int = 1_000
    rooms: int = 20
    heartbeat_ms: int = 5_000  # the default
    churn: float = 0.01  # fraction of rooms changing per second
    settle_heartbeats: float = 3.0  # after the join, before measuring
    reference_s: float = 30.0
    window_s: float = 60.0
    stall_ms: float = 50.0
    delay_p99_ms: float = 100.0
    cpu_ratio: float = 1.3


SCALE: Final = ScaleSizes()
SCALE_QUICK: Final = ScaleSizes(
    agents=2_000, reference_agents=200, settle_heartbeats=1.5, reference_s=10.0, window_s=10.0
)


@dataclass
class _Run:
    window: Window
    runner: dict[str, Any]
    join_s: float
    joined: int
    idle: float  # the orchestrator's CPU seconds per second before any agent joined

    def per_poll(self, less_idle: bool = False) -> float:
        w = self.window
        cpu = w.cpu - (self.idle * w.wall if less_idle else 0.0)
        return max(0.0, cpu) / max(1, w.load.replies)


def _run(bench: Bench, s: ScaleSizes, agents: int, seconds: float, phase: str) -> _Run:
    from tools.bench import idle_rate, loadgen, log, measure

    extra = ["--poll-spread"]
    if bench.profiler.out_dir is not None:
        extra += ["--stall-report-ms", f"{s.stall_ms:g}"]
    with OrchestratorProcess(heartbeat_ms=s.heartbeat_ms, extra=extra) as orch:
        idle = idle_rate(orch)
        started = time.monotonic()
        with loadgen(orch.agent_url, bench.sizes, agents, rooms=s.rooms) as load:
            joined = load.wait_joined(timeout=120 + agents / 50)
            orch.wait_instances(agents, timeout=120)
            join_s = time.monotonic() - started
            log(f"scale18k: {joined:,} agents joined in {join_s:.0f} s, settling")
            time.sleep(s.settle_heartbeats * s.heartbeat_ms / 1000)
            load.set(churn_per_s=s.churn * agents * s.rooms)
            time.sleep(bench.sizes.pause_s)
            window = measure(orch, load, seconds, bench.profiler, phase)
            runner = orch.stats()
            load.set(churn_per_s=0.0)
        bench.profiler.save_log(phase, orch)
    return _Run(window, runner, join_s, joined, idle)


def scale18k(bench: Bench) -> None:
    """Run the scenario and add its rows to ``bench``."""
    from tools.bench import Row, at_most, at_most_ratio, log

    s = SCALE_QUICK if bench.quick else SCALE
    n, ref_n = s.agents, s.reference_agents
    churn = f"{s.churn:.0%}/s churn"
    log(f"scale18k: reference, {ref_n:,} agents × {s.rooms} rooms, heartbeat {s.heartbeat_ms} ms")
    ref = _run(bench, s, ref_n, s.reference_s, "scale18k-reference")
    log(f"scale18k: {n:,} agents × {s.rooms} rooms, heartbeat {s.heartbeat_ms} ms, {churn}")
    big = _run(bench, s, n, s.window_s, "scale18k")
    w, runner = big.window, big.runner
    lag = runner["loop_lag_ms"]
    gc = runner["gc"]
    per_poll, ref_per_poll = big.per_poll(), ref.per_poll()
    spurious = int(runner["stale"].get("ok", 0)) + w.load.evicted("ok") + w.load.kicked("ok")
    label = f"{n:,} agents × {s.rooms}"
    bench.add(
        at_most(
            Row(
                "scale18k",
                f"spurious stale + evicted + kicked, {label}, {s.window_s:g} s of {churn}",
                spurious,
                "",
                note=f"errors {w.load.error_count}; {big.joined:,} joined in {big.join_s:.0f} s",
            ),
            0,
        )
    )
    bench.add(
        at_most(
            Row(
                "scale18k",
                f"orchestrator loop stall max (50 ms timer lateness), {label}",
                lag["max"],
                "ms",
                note=f"p99 {lag['p99']:.0f} ms; less the loop thread's wait for a CPU: max "
                f"{lag['own_max']:.0f}, p99 {lag['own_p99']:.0f} ms; young GC "
                f"{gc['runs'][0]} runs, longest {gc['longest_ms'][0]:.0f} ms",
            ),
            s.stall_ms,
            "ms",
        )
    )
    spread = runner.get("poll_spread") or {}
    bench.add(
        at_most(
            Row(
                "scale18k",
                f"poll delay p99 (agent view), {label}",
                w.load.lateness.quantile(0.99) * 1000,
                "ms",
                note=f"max {w.load.lateness.max * 1000:.0f} ms; polls per 10 ms: mean "
                f"{spread.get('mean_per_10ms', 0):.1f}, p99 {spread.get('p99_per_10ms', 0)}, "
                f"max {spread.get('max_per_10ms', 0)}",
            ),
            s.delay_p99_ms,
            "ms",
        )
    )
    polls_per_s = PROJECTED_AGENTS * 1000 / s.heartbeat_ms
    bench.add(
        at_most_ratio(
            Row(
                "scale18k",
                f"CPU per poll at {n:,} agents, floor = at {ref_n:,} (same heartbeat and churn)",
                per_poll * 1e6,
                "µs",
                floor=ref_per_poll * 1e6,
                note=f"{w.cpu_rate:.0%} of a core, {w.load.replies / w.wall:,.0f} polls/s; "
                f"less the idle orchestrator's CPU ({1000 * big.idle:.0f} ms/s): "
                f"{big.per_poll(True) * 1e6:.0f} vs {ref.per_poll(True) * 1e6:.0f} µs; "
                f"{PROJECTED_AGENTS:,} agents would need {per_poll * polls_per_s:.2f} cores",
            ),
            s.cpu_ratio,
        )
    )
    bench.extra["scale18k"] = {
        "sizes": s.__dict__,
        "reference": {"load": ref.window.load.summary(), "runner": ref.runner},
        "big": {"load": w.load.summary(), "runner": runner, "join_s": big.join_s},
        "cpu_rate": {"reference": ref.window.cpu_rate, "big": w.cpu_rate},
        "idle_cpu_rate": {"reference": ref.idle, "big": big.idle},
    }
