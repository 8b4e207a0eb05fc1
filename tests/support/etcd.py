"""A real etcd for tests: one ``etcd`` process on 127.0.0.1, ephemeral ports, a temporary
data dir, and fast raft timings; it can be stopped, killed, paused (SIGSTOP), resumed and
restarted on the same ports and data."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Self

from .ports import free_ports

MISSING = (
    "etcd is not installed: the election tests need a real etcd >= 3.4 on PATH. "
    "`make test` installs the Debian package etcd-server; by hand: apt-get install etcd-server"
)


def etcd_binary() -> str:
    """The path of ``etcd``; :class:`RuntimeError` with how to install it when missing."""
    path = shutil.which("etcd")
    if path is None:
        raise RuntimeError(MISSING)
    return path


class EtcdServer:
    """One single-member etcd cluster. :meth:`start` (or ``with``/``async with``) runs it
    and waits until ``/health`` answers; :attr:`endpoint` is its client URL."""

    def __init__(self, *, start_timeout: float = 15.0) -> None:
        self._binary = etcd_binary()
        self._start_timeout = start_timeout
        self._root = Path(tempfile.mkdtemp(prefix="fleet-etcd-", dir=_scratch()))
        self.client_port, self.peer_port = free_ports(2)
        self._proc: subprocess.Popen[bytes] | None = None
        self._paused = False

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    @property
    def pid(self) -> int | None:
        """The etcd process's id while it runs (for CPU accounting), else None."""
        return self._proc.pid if self.running and self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def log_path(self) -> Path:
        return self._root / "etcd.log"

    def start(self) -> None:
        """Run etcd and wait until it is healthy; if its ports were taken in the meantime,
        try twice more on new ones (only before it ever ran: a restart keeps its ports)."""
        fresh = not (self._root / "data").exists()
        for _ in range(3 if fresh else 1):
            self._spawn()
            if self._wait_healthy():
                return
            self.kill()
            if fresh:
                shutil.rmtree(self._root / "data", ignore_errors=True)
                self.client_port, self.peer_port = free_ports(2)
        raise RuntimeError(f"etcd did not become healthy; its log ends:\n{self.log_tail()}")

    def stop(self) -> None:
        """SIGTERM, and wait (SIGKILL after 10 s)."""
        proc = self._proc
        if proc is None:
            return
        self.resume()
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._proc = None

    def kill(self) -> None:
        """SIGKILL, and wait."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        self._proc = None
        self._paused = False

    def pause(self) -> None:
        """SIGSTOP: the process keeps its sockets open and answers nothing."""
        assert self._proc is not None and self._proc.poll() is None, "etcd is not running"
        self._proc.send_signal(signal.SIGSTOP)
        self._paused = True
        _wait_state(self._proc.pid, stopped=True)

    def resume(self) -> None:
        """SIGCONT after :meth:`pause`; nothing otherwise."""
        if self._paused and self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGCONT)
            _wait_state(self._proc.pid, stopped=False)
        self._paused = False

    def restart(self) -> None:
        """:meth:`stop`, then :meth:`start` on the same ports and data dir."""
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop etcd and remove its data dir; harmless twice."""
        self.kill()
        shutil.rmtree(self._root, ignore_errors=True)

    async def astart(self) -> None:
        await asyncio.to_thread(self.start)

    async def astop(self) -> None:
        await asyncio.to_thread(self.stop)

    async def arestart(self) -> None:
        await asyncio.to_thread(self.restart)

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return "(no log)"

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        await self.astart()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.to_thread(self.close)

    def _spawn(self) -> None:
        client = f"http://127.0.0.1:{self.client_port}"
        peer = f"http://127.0.0.1:{self.peer_port}"
        args = [
            self._binary,
            "--name=test",
            f"--data-dir={self._root / 'data'}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=test={peer}",
            "--initial-cluster-state=new",
            "--heartbeat-interval=50",
            "--election-timeout=500",
            "--logger=zap",
            "--log-outputs=stderr",
            "--log-level=warn",
        ]
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
            )

    def _wait_healthy(self) -> bool:
        deadline = time.monotonic() + self._start_timeout
        while time.monotonic() < deadline:
            if not self.running:
                return False
            with contextlib.suppress(OSError, urllib.error.URLError):
                url = f"{self.endpoint}/health"
                with urllib.request.urlopen(url, timeout=1) as response:
                    if b'"true"' in response.read():
                        return True
            time.sleep(0.05)
        return False


def _wait_state(pid: int, *, stopped: bool, timeout: float = 5.0) -> None:
    """Wait until the kernel shows ``pid`` stopped (state T) or not, as asked: a signal is
    delivered a moment after it is sent."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return
        state = stat.rsplit(")", 1)[1].split()[0]
        if (state in ("T", "t")) == stopped:
            return
        time.sleep(0.005)
    raise RuntimeError(f"etcd (pid {pid}) did not {'stop' if stopped else 'continue'}")


def _scratch() -> str | None:
    """A memory-backed folder when the machine has one (etcd fsyncs on every write)."""
    shm = "/dev/shm"
    return shm if os.path.isdir(shm) and os.access(shm, os.W_OK) else None
