"""``make run-ha`` as a newcomer runs it: etcd, two nodes and two game servers come up,
the banner names the leader, killing it moves the lead and the game servers follow,
and Ctrl-C stops everything."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LEADER = re.compile(r"^leader: (http://127\.0\.0\.1:\d+)$")
LEADER_WITH = re.compile(r"^leader: (http://127\.0\.0\.1:\d+) \((\d+) game servers\)$")
KILL = re.compile(r"kill (\d+)$")


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _base_port() -> int:
    """A port p with p, p+1, p+10 and p+11 free (the two nodes' HTTP and gRPC)."""
    for _ in range(200):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            base = int(sock.getsockname()[1])
        if base < 60000 and all(_bindable(base + d) for d in (1, 10, 11)):
            return base
    raise AssertionError("no free port range")


class Lines:
    """The stdout lines of a process, read on a thread."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        assert proc.stdout is not None
        self._stdout = proc.stdout
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self._stdout:
            self.lines.append(line.rstrip("\n"))

    def wait(self, pattern: re.Pattern[str], timeout: float, start: int = 0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.lines[start:]:
                found = pattern.search(line)
                if found:
                    return found
            time.sleep(0.05)
        raise AssertionError(f"no line matched {pattern.pattern}: {self.lines[-20:]}")


def test_run_ha_elects_a_leader_fails_over_and_stops_on_ctrl_c() -> None:
    base = _base_port()
    game = _base_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "examples.run_ha", "--port", str(base), "--game-port", str(game)],
        cwd=ROOT,
        env={k: v for k, v in os.environ.items() if not k.startswith("FLEET_")},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    try:
        out = Lines(proc)
        first = out.wait(LEADER, 60).group(1)
        pid = int(out.wait(KILL, 5).group(1))
        mark = len(out.lines)
        os.kill(pid, signal.SIGKILL)
        other = {f"http://127.0.0.1:{base}", f"http://127.0.0.1:{base + 10}"} - {first}
        moved = re.compile(rf"^leader: {re.escape(other.pop())} \(2 game servers\)$")
        out.wait(moved, 60, start=mark)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=40) == 0
        out.wait(re.compile("^stopped$"), 5)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
