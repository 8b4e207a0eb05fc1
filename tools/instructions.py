"""Instructions per request, the orchestrator against its floor: figures that do not move
with the machine's load, unlike the wall-clock and CPU figures of ``tools/bench.py``.

``python -m tools.instructions [--what create|stats|reply] [--agents N] [--seconds S]``
runs the orchestrator under test (:mod:`tools.loadgen.target`), then the floor
(:mod:`tools.floors`), each under ``valgrind --tool=callgrind`` with instrumentation off;
connects ``N`` load-generator agents × 50 rooms (the heartbeat at 300 s, so polls stay out
of the count); drives ``wrk -t1 -c8`` for 3 s of warm-up, then for ``S`` seconds with
instrumentation on; and prints the instructions collected over the requests answered,
for both, and their ratio:

- ``create``: ``POST /v1/rooms`` ``{"type":"match"}`` with the admin key, against the
  floor's ``POST /rt`` (an HTTP request and one WebSocket round trip to an agent);
- ``stats``: ``GET /v1/stats`` with the admin key, against the floor's ``GET /small``;
- ``reply``: no requests; ``N`` agents × 20 rooms at a 1 s heartbeat, each changing one
  room before every reply (the steady scenario's full snapshots: a delta where the
  orchestrator accepts them), per poll round trip, against the floor's bare round trip;
- ``quiet``: the same with nothing changing (hash-only replies, and a forced full reply
  every twelfth poll).

Needs ``valgrind`` (Debian ``valgrind``) and ``wrk``. Under valgrind both servers run about
50 times slower, so a run takes about a minute.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tools.loadgen._generator import AGENT_KEY, LoadConfig, LoadGenerator
from tools.loadgen._process import ADMIN_KEY

_WARM_S = 3
_JOIN_S = 15  # valgrind slows the joins too
_REPLY_HEARTBEAT_MS = 1000
_POST = 'wrk.method = "POST"\nwrk.body = \'{"type":"match"}\'\n'
_POST += 'wrk.headers["Content-Type"] = "application/json"\n'


def _wrk(url: str, seconds: float, script: Path | None) -> int:
    """Requests answered in ``seconds`` by ``wrk -t1 -c8`` (non-2xx answers refused)."""
    args = ["wrk", "-t1", "-c8", f"-d{seconds:g}s", "-H", f"Authorization: Bearer {ADMIN_KEY}"]
    if script is not None:
        args += ["-s", str(script)]
    out = subprocess.run([*args, url], capture_output=True, text=True, check=True).stdout
    if "Non-2xx" in out:
        raise SystemExit(f"wrk got errors from {url}:\n{out}")
    found = re.search(r"(\d+) requests in", out)
    if found is None:
        raise SystemExit(f"wrk printed no request count:\n{out}")
    return int(found.group(1))


def _control(pid: int, *args: str) -> None:
    subprocess.run(["callgrind_control", *args, str(pid)], capture_output=True, check=True)


def _start(server: str, heartbeat_ms: int, folder: Path) -> tuple[subprocess.Popen[str], int]:
    """``server`` (``target`` or ``floor``) under callgrind, instrumentation off; its port."""
    module = "tools.loadgen.target" if server == "target" else "tools.floors"
    out_file = folder / f"callgrind.{server}.%p"
    valgrind = ["valgrind", "--tool=callgrind", "--instr-atstart=no"]
    server_args = ["-m", module, "--heartbeat-ms", str(heartbeat_ms)]
    process = subprocess.Popen(
        [*valgrind, f"--callgrind-out-file={out_file}", sys.executable, *server_args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert process.stdin is not None and process.stdout is not None
    return process, json.loads(process.stdout.readline())["port"]


def _stop(process: subprocess.Popen[str], server: str, folder: Path) -> int:
    """Quit ``process``; the instructions it collected while instrumented."""
    assert process.stdin is not None
    process.stdin.write("quit\n")
    process.stdin.flush()
    process.wait(timeout=120)
    total = 0
    for dump in folder.glob(f"callgrind.{server}.{process.pid}.*"):
        for line in dump.read_text().splitlines():
            if line.startswith("summary:") or line.startswith("totals:"):
                total = max(total, int(line.split()[1]))
    return total


def measure_replies(
    server: str, agents: int, seconds: float, folder: Path, *, changing: bool
) -> float:
    """Instructions per poll round trip of ``server`` (``target`` or ``floor``), every
    reply after a changed room when ``changing``, else as a quiet agent answers."""
    process, port = _start(server, _REPLY_HEARTBEAT_MS, folder)
    config = LoadConfig(url=f"ws://127.0.0.1:{port}/", agents=agents, rooms=20, processes=1)
    try:
        with LoadGenerator(config) as load:
            load.wait_joined(timeout=_JOIN_S * 4)
            if server == "floor":
                load.set(policy="full" if changing else "hash")
            if changing:
                load.set(change_fraction=1.0)
            time.sleep(_WARM_S)
            load.reset()
            _control(process.pid, "-i", "on")
            time.sleep(seconds)
            _control(process.pid, "-i", "off")
            replies = load.report(reset=True).replies
            _control(process.pid, "-d")
    finally:
        total = _stop(process, server, folder)
    return total / max(1, replies)


def measure(server: str, what: str, agents: int, seconds: float, folder: Path) -> float:
    """Instructions per request of ``server`` (``target`` or ``floor``)."""
    if what in ("reply", "quiet"):
        return measure_replies(server, agents, seconds, folder, changing=what == "reply")
    process, port = _start(server, 300_000, folder)
    agents_url = f"ws://127.0.0.1:{port}{'/' if server == 'target' else '/cmd'}"
    fleet = ["--agents", str(agents), "--rooms", "50", "--duration", "600"]
    load = subprocess.Popen(
        [sys.executable, "-m", "tools.loadgen", "--url", agents_url, "--key", AGENT_KEY, *fleet]
        if agents
        else [sys.executable, "-c", "import time; time.sleep(600)"],  # no fleet (reads)
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    script = folder / "post.lua"
    script.write_text(_POST)
    if what == "create":
        path, body = ("/v1/rooms" if server == "target" else "/rt"), script
    else:
        path, body = ("/v1/stats" if server == "target" else "/small"), None
    url = f"http://127.0.0.1:{port}{path}"
    try:
        time.sleep(_JOIN_S)
        _wrk(url, _WARM_S, body)
        _control(process.pid, "-i", "on")
        requests = _wrk(url, seconds, body)
        _control(process.pid, "-i", "off")
        _control(process.pid, "-d")
    finally:
        load.terminate()
        load.wait()
        total = _stop(process, server, folder)
    return total / max(1, requests)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tools.instructions")
    parser.add_argument("--what", choices=("create", "stats", "reply", "quiet"), default="create")
    parser.add_argument("--agents", type=int, default=100, help="0: no agents (stats only)")
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        ours = measure("target", args.what, args.agents, args.seconds, folder)
        floor = measure("floor", args.what, args.agents, args.seconds, folder)
    print(
        f"{args.what}, {args.agents} agents: {ours / 1000:,.0f}k instructions per "
        f"{'poll' if args.what in ('reply', 'quiet') else 'request'}, "
        f"floor {floor / 1000:,.0f}k, {ours / floor:.2f}×"
    )


if __name__ == "__main__":
    main()
