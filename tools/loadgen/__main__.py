"""``python -m tools.loadgen``: simulated agents against an orchestrator, with a report.

Without ``--url`` it starts the orchestrator under test itself
(:mod:`tools.loadgen.target`, ephemeral ports) and adds that process's CPU time per
poll, its RSS and its stale counts to the report. Examples::

    python -m tools.loadgen --agents 2000 --rooms 20 --churn 0.01 --duration 30
    python -m tools.loadgen --agents 500 --silent 0.01 --late 0.02 --garbage 0.005
    python -m tools.loadgen --agents 2000 --max-connections 16 --metadata '{"mode":"ranked"}'
    python -m tools.loadgen --url ws://127.0.0.1:7350/ --key "$AGENT_KEY" --agents 100
    python -m tools.loadgen --url ws://a:7350/ --url ws://b:7350/ --key "$AGENT_KEY"
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from typing import Any

from ._generator import AGENT_KEY, LoadConfig, LoadGenerator
from ._process import OrchestratorProcess


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tools.loadgen",
        description="Simulated fleet agents speaking protocol 3 to an orchestrator.",
    )
    parser.add_argument(
        "--url",
        action="append",
        help="agent WebSocket URL (default: start an orchestrator); repeat it for the nodes "
        "of a cluster, dialled in order, following a standby's leader hint",
    )
    parser.add_argument("--key", default=AGENT_KEY, help="agent key (with --url)")
    parser.add_argument("--agents", type=int, default=100)
    parser.add_argument("--rooms", type=int, default=20, help="rooms per agent")
    parser.add_argument("--processes", type=int, default=2, help="worker processes")
    parser.add_argument(
        "--churn", type=float, default=0.0, help="fraction of rooms whose count changes per second"
    )
    parser.add_argument(
        "--replace", type=float, default=0.0, help="rooms replaced per second (destroy + create)"
    )
    parser.add_argument(
        "--heartbeat-ms", type=int, default=1000, help="the started orchestrator's heartbeat"
    )
    parser.add_argument("--duration", type=float, default=10.0, help="seconds to measure")
    parser.add_argument("--silent", type=float, default=0.0, help="fraction of silent agents")
    parser.add_argument("--late", type=float, default=0.0, help="fraction of late agents")
    parser.add_argument("--garbage", type=float, default=0.0, help="fraction sending garbage")
    parser.add_argument(
        "--max-connections", type=int, help="seats of every room (RoomState.max_connections)"
    )
    parser.add_argument(
        "--metadata",
        type=json.loads,
        help='a JSON object every room reports as its metadata, with its own id under "room"',
    )
    parser.add_argument(
        "--shared-metadata",
        action="store_true",
        help='every room reports the --metadata object as it is (no "room" key)',
    )
    parser.add_argument(
        "--full-replies",
        action="store_true",
        help="never answer with a delta (as an agent older than deltas)",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if not 0 < args.duration <= 3600 or args.agents < 1:
        print("duration must be in (0, 3600] s and agents ≥ 1", file=sys.stderr)
        return 2
    if args.metadata is not None and not isinstance(args.metadata, dict):
        print("--metadata must be a JSON object", file=sys.stderr)
        return 2
    with contextlib.ExitStack() as stack:
        orch: OrchestratorProcess | None = None
        url: str | tuple[str, ...]
        key = args.key
        if args.url:
            url = tuple(args.url)
        else:
            orch = stack.enter_context(OrchestratorProcess(heartbeat_ms=args.heartbeat_ms))
            url, key = orch.agent_url, AGENT_KEY
        config = LoadConfig(
            url=url,
            key=key,
            agents=args.agents,
            rooms=args.rooms,
            processes=args.processes,
            silent=args.silent,
            late=args.late,
            garbage=args.garbage,
            room_max_connections=args.max_connections,
            deltas=not args.full_replies,
            room_metadata=args.metadata,
            room_metadata_unique=not args.shared_metadata,
        )
        load = stack.enter_context(LoadGenerator(config))
        joined = load.wait_joined(timeout=60 + args.agents / 100)
        if orch is not None:
            orch.wait_instances(round(args.agents * (1 - args.silent)), timeout=30)
            orch.reset()
        load.set(churn_per_s=args.churn * args.agents * args.rooms, replace_per_s=args.replace)
        load.reset()
        cpu0 = orch.cpu_seconds() if orch is not None else 0.0
        time.sleep(args.duration)
        report = load.report()
        summary: dict[str, Any] = {"joined_at_start": joined, **report.summary()}
        if orch is not None:
            cpu = orch.cpu_seconds() - cpu0
            runner = orch.stats()
            summary["orchestrator"] = {
                "cpu_share": round(cpu / report.elapsed, 3),
                "cpu_per_poll_us": round(1e6 * cpu / max(1, report.replies), 1),
                "rss_mib": round(orch.rss_bytes() / 2**20, 1),
                "instances": runner["instances"],
                "rooms": runner["rooms"],
                "stale": runner["stale"],
                "warnings": runner["warnings"],
                "gc": runner["gc"],
                "loop_lag_ms": runner["loop_lag_ms"],
            }
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        for name, value in summary.items():
            print(f"{name:>20}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
