"""Every code sample in README.md runs: Python blocks as programs, curl lines against a
live daemon, and the quickstart `make run` with the commands it prints."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support.orchestrators import agent_url, daemon_env
from tests.support.ports import free_port_pair, free_ports

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"```(\w+)\n(.*?)```", README, re.S)
PYTHON = [code for lang, code in BLOCKS if lang == "python"]
CURL = [
    line
    for lang, code in BLOCKS
    if lang == "sh"
    for line in code.splitlines()
    if line.startswith("curl ")
]


def test_readme_starts_with_the_two_commands() -> None:
    first_block = BLOCKS[0][1].splitlines()
    assert first_block[0].startswith("make run") and first_block[1].startswith("make test")
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^run:", makefile, re.M) and re.search(r"^test:", makefile, re.M)
    assert "make test" in (ROOT / ".ci" / "run").read_text()


@pytest.mark.parametrize("code", PYTHON, ids=[f"python-{i}" for i in range(len(PYTHON))])
def test_python_sample_runs(code: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr


@contextmanager
def _proc(*args: str, env: dict[str, str]) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        [sys.executable, *args],
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def _curl(line: str, env: dict[str, str]) -> dict[str, object]:
    result = subprocess.run(
        ["bash", "-c", line], capture_output=True, text=True, timeout=30, env=env
    )
    assert result.returncode == 0, (line, result.stderr)
    body: dict[str, object] = json.loads(result.stdout)
    return body


def _wait_instances(port: int, env: dict[str, str], count: int) -> None:
    line = f'curl -s -H "Authorization: Bearer $FLEET_ADMIN_KEY" http://127.0.0.1:{port}/v1/stats'
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            body = _curl(line, env)
            data = body.get("data")
            if isinstance(data, dict) and data.get("instances") == count:
                return
        except (AssertionError, json.JSONDecodeError):
            pass
        time.sleep(0.2)
    raise AssertionError(f"fleet never reached {count} instances")


def test_curl_samples_work_against_a_live_daemon() -> None:
    assert len(CURL) >= 5
    port, game = free_ports(2)
    env = {**os.environ, **daemon_env(port, heartbeat_ms=200)}
    game_args = ["--name", "eu1", "--port", str(game), "--label", "region=eu"]
    with (
        _proc("-m", "fleet_server", env=env),
        _proc(
            "-m",
            "examples.game_server",
            *game_args,
            "--orchestrator",
            agent_url(port),
            env=env,
        ),
    ):
        _wait_instances(port, env, 1)
        for line in CURL:
            body = _curl(line.replace("127.0.0.1:7350", f"127.0.0.1:{port}"), env)
            assert body["status"] == "OK", (line, body)


def test_make_run_quickstart_prints_working_commands_and_stops_on_ctrl_c() -> None:
    port, grpc_port = free_ports(2)
    game = free_port_pair()  # eu1 on game, us1 on game + 1
    args = f"--port {port} --grpc-port {grpc_port} --game-port {game}"
    proc = subprocess.Popen(
        ["make", "-s", "run", f"RUN_ARGS={args}"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    assert proc.stdout is not None
    try:
        lines: list[str] = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "Ctrl-C stops everything" in line:
                break
        text = "".join(lines)
        key = re.search(r"admin key: (\S+)", text)
        assert key is not None, text
        commands = [ln.strip() for ln in lines if ln.strip().startswith("curl -s ")]
        list_line = next(c for c in commands if c.endswith("/v1/instances"))
        instances = _curl(list_line, dict(os.environ))
        assert instances["status"] == "OK" and len(instances["data"]) == 2  # type: ignore[arg-type]
        create = re.search(r"(curl -s .*Content-Type.*\\\n\s*-d .*?/v1/rooms)", text)
        assert create is not None, text
        created = _curl(create.group(1).replace("\\\n", " "), dict(os.environ))
        assert created["status"] == "OK"
        assert "grpcurl -plaintext" in text
        dashboard = re.search(r"dashboard: (http://\S+/) ", text)
        assert dashboard is not None and dashboard.group(1) == f"http://127.0.0.1:{port}/", text
        page = subprocess.run(
            ["curl", "-s", "-H", "Accept: text/html", dashboard.group(1)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert "<title>rivalis-fleet</title>" in page.stdout
        os.killpg(proc.pid, signal.SIGINT)
        rest = proc.stdout.read()
        # make itself dies of the SIGINT, as in a terminal; the fleet stops cleanly.
        assert proc.wait(timeout=30) in (0, -signal.SIGINT)
        assert "stopped" in rest
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", port))  # the daemon let go of its port
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        proc.stdout.close()
