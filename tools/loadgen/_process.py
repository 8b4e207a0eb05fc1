"""Servers under test in their own processes, and their CPU time and memory from /proc."""

from __future__ import annotations

import contextlib
import json
import os
import select
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Final, Self

__all__ = [
    "ADMIN_KEY",
    "OrchestratorProcess",
    "ServerProcess",
    "cpu_seconds",
    "rss_bytes",
]

ADMIN_KEY: Final = "loadgen-admin-key-0123456789abcdef"
_CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK")
_ROOT: Final = Path(__file__).resolve().parents[2]


def cpu_seconds(pid: int) -> float:
    """CPU time of every live thread of ``pid``, in nanosecond resolution from
    ``/proc/<pid>/task/*/schedstat`` (``/proc/<pid>/stat`` counts 10 ms ticks)."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return _stat_seconds(pid)
    total = 0
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat", "rb") as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            continue  # the thread just ended
    return total / 1e9 if total else _stat_seconds(pid)


def _stat_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat", "rb") as f:
        text = f.read()
    fields = text[text.rindex(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


class ServerProcess:
    """``python -m <module> …``: it prints one JSON line (its ports) once it listens,
    then answers one JSON line per command line on stdin (``stats``, ``reset``); ``quit``
    (or EOF) stops it."""

    def __init__(self, module: str, args: list[str], *, ready_timeout: float = 30.0) -> None:
        self._log: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(_ROOT), env.get("PYTHONPATH"))))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            cwd=_ROOT,
            env=env,
        )
        self.info: dict[str, Any] = self._read_line(ready_timeout)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def port(self) -> int:
        return int(self.info["port"])

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pid)

    def rss_bytes(self) -> int:
        return rss_bytes(self.pid)

    def _read_line(self, timeout: float) -> dict[str, Any]:
        stdout = self.proc.stdout
        assert stdout is not None
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"server did not answer in time; log:\n{self.log_tail()}")
            ready, _, _ = select.select([stdout], [], [], remaining)
            if ready:
                line = stdout.readline()
                if not line:
                    raise RuntimeError(f"server exited; log:\n{self.log_tail()}")
                decoded: dict[str, Any] = json.loads(line)
                return decoded

    def command(self, name: str, timeout: float = 30.0) -> dict[str, Any]:
        stdin = self.proc.stdin
        assert stdin is not None
        stdin.write(name.encode() + b"\n")
        stdin.flush()
        return self._read_line(timeout)

    def log_tail(self, size: int = 4000) -> str:
        self._log.seek(0, os.SEEK_END)
        end = self._log.tell()
        self._log.seek(max(0, end - size))
        return self._log.read().decode(errors="replace")

    def stop(self, timeout: float = 15.0) -> int | None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write(b"quit\n")
                self.proc.stdin.close()
            except (BrokenPipeError, OSError):
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.terminate()
                try:
                    self.proc.wait(5.0)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):  # also after a kill
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
        self._log.close()
        return self.proc.returncode

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class OrchestratorProcess(ServerProcess):
    """The orchestrator under test (:mod:`tools.loadgen.target`) on ephemeral ports.

    ``LOADGEN_TARGET_ARGS`` (shell words) adds runner options to every start, for
    what-if runs such as ``--collector default``."""

    def __init__(
        self,
        *,
        heartbeat_ms: int = 1000,
        grpc: bool = False,
        command_timeout_ms: int = 10_000,
        extra: list[str] | None = None,
    ) -> None:
        args = [
            "--heartbeat-ms",
            str(heartbeat_ms),
            "--command-timeout-ms",
            str(command_timeout_ms),
        ]
        if grpc:
            args.append("--grpc")
        args += shlex.split(os.environ.get("LOADGEN_TARGET_ARGS", ""))
        super().__init__("tools.loadgen.target", args + (extra or []))

    @property
    def grpc_port(self) -> int | None:
        port = self.info.get("grpc_port")
        return int(port) if port is not None else None

    @property
    def agent_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/"

    def stats(self) -> dict[str, Any]:
        """The runner's counters: fleet totals, events by type, stale by behaviour, warnings."""
        return self.command("stats")

    def reset(self) -> None:
        self.command("reset")

    def wait_instances(self, count: int, timeout: float = 120.0, rooms: int | None = None) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            stats = self.stats()
            if stats["instances"] >= count and (rooms is None or stats["rooms"] >= rooms):
                return True
            time.sleep(0.25)
        return False
