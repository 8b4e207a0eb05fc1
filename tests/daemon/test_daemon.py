"""The rivalis-fleet daemon as a real subprocess (SPEC §14, catalogue 97–104)."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from fleet_agent import wire
from tests.support.keys import ADMIN, KEY
from tests.support.orchestrators import env_without_fleet

ROOT = Path(__file__).resolve().parents[2]
STARTUP = re.compile(
    r"orchestrator listening host=\((?P<host>[^)]*)\) port=\((?P<port>\d+)\) "
    r"api=\((?P<api>[^)]*)\) grpc=\((?P<grpc>[^)]*)\) heartbeat=\((?P<hb>\d+)ms\)"
)


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fleet_server", *args],
        capture_output=True,
        text=True,
        env=env_without_fleet(**(env or {})),
        cwd=ROOT,
        timeout=30,
    )


class Daemon:
    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: list[str] = []

    def wait_line(self, pattern: re.Pattern[str] | str, timeout: float = 20) -> re.Match[str]:
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        assert self.proc.stderr is not None
        for line in self.lines:
            if m := regex.search(line):
                return m
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                break
            self.lines.append(line)
            if m := regex.search(line):
                return m
        raise AssertionError(f"no line matching {regex.pattern!r} in {self.lines!r}")

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> int:
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout=20)
        assert self.proc.stderr is not None
        self.lines.extend(self.proc.stderr.readlines())
        return code


@contextmanager
def daemon(*args: str, env: dict[str, str] | None = None) -> Iterator[Daemon]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "fleet_server", "-H", "127.0.0.1", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env_without_fleet(**(env or {})),
        cwd=ROOT,
    )
    d = Daemon(proc)
    try:
        yield d
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def test_help_lists_every_flag_env_name_and_the_dev_key_note() -> None:
    for flag in ("--help", "-h"):
        result = run(flag)
        assert result.returncode == 0
        out = result.stdout
        for needle in (
            "--host",
            "--port",
            "--agent-key",
            "--admin-key",
            "--no-api",
            "--grpc-port",
            "--no-grpc",
            "--cors",
            "--sse-query-auth",
            "--trust-proxy",
            "--metrics-auth",
            "--no-agent-tokens",
            "--heartbeat",
            "--command-timeout",
            "--log-level",
            "--config",
            "--version",
            "FLEET_HOST",
            "FLEET_PORT",
            "FLEET_AGENT_KEY",
            "FLEET_ADMIN_KEY",
            "FLEET_GRPC_PORT",
            "FLEET_CORS_ORIGINS",
            "FLEET_SSE_QUERY_AUTH",
            "FLEET_TRUST_PROXY",
            "FLEET_METRICS_AUTH",
            "FLEET_AGENT_TOKENS",
            "FLEET_HEARTBEAT_MS",
            "FLEET_COMMAND_TIMEOUT_MS",
            "FLEET_LOG_LEVEL",
            "FLEET_ENV",
            "base64url",
            "production",
        ):
            assert needle in out, needle


def test_version_prints_the_distribution_version() -> None:
    from importlib.metadata import version

    for flag in ("--version", "-v"):
        result = run(flag)
        assert result.returncode == 0
        assert result.stdout == version("rivalis-fleet") + "\n"


@pytest.mark.parametrize("args", [["--bogus"], ["--port"], ["--port", "abc"]])
def test_usage_errors_exit_2(args: list[str]) -> None:
    result = run(*args)
    assert result.returncode == 2
    assert "usage:" in result.stderr


@pytest.mark.parametrize(
    ("args", "env", "yaml_text", "needle"),
    [
        ([], {"FLEET_PORT": "eighty"}, None, "FLEET_PORT"),
        (["--log-level", "loud"], {}, None, "--log-level"),
        ([], {}, "colour: blue\n", "colour"),
        ([], {}, "port: [1, 2\n", "YAML"),
        ([], {"FLEET_HEARTBEAT_MS": "0"}, None, "FLEET_HEARTBEAT_MS"),
        ([], {"FLEET_TRUST_PROXY": "maybe"}, None, "FLEET_TRUST_PROXY"),
        ([], {"FLEET_METRICS_AUTH": "maybe"}, None, "FLEET_METRICS_AUTH"),
        ([], {}, "metrics_auth: 1\n", "metrics_auth"),
        (["--port", "70000"], {}, None, "--port"),
        ([], {}, "heartbeat_ms: -5\n", "heartbeat_ms"),
    ],
)
def test_bad_configuration_is_one_line_naming_it_exit_2(
    tmp_path: Path, args: list[str], env: dict[str, str], yaml_text: str | None, needle: str
) -> None:
    if yaml_text is not None:
        path = tmp_path / "fleet.yaml"
        path.write_text(yaml_text)
        args = [*args, "--config", str(path)]
    result = run(*args, env=env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rivalis-fleet: "), result.stderr
    assert needle in lines[0]


def test_production_refusals_exit_2() -> None:
    missing = run(env={"FLEET_ENV": "production"})
    assert missing.returncode == 2 and "agent key required" in missing.stderr
    short = run("--agent-key", "short", "--admin-key", ADMIN, env={"FLEET_ENV": "production"})
    assert short.returncode == 2 and "16" in short.stderr
    assert "short" not in short.stderr.replace("rivalis-fleet", "")
    shared = run("--agent-key", ADMIN, "--admin-key", ADMIN, env={"FLEET_ENV": "production"})
    assert shared.returncode == 2 and "intersect" in shared.stderr
    assert ADMIN not in shared.stderr


def test_dev_keys_are_generated_and_printed_once_each_then_sigterm_exits_0() -> None:
    with daemon("-p", "0", "--no-grpc") as d:
        agent = d.wait_line(r"dev agent key generated: (\S+) \(pass --agent-key")
        admin = d.wait_line(r"dev admin key generated: (\S+) \(pass --admin-key")
        for key in (agent.group(1), admin.group(1)):
            assert re.fullmatch(r"[A-Za-z0-9_-]{43}", key)
        line = d.wait_line(STARTUP)
        assert line["host"] == "127.0.0.1" and int(line["port"]) > 0
        assert line["api"] == "/v1" and line["grpc"] == "off" and line["hb"] == "5000"
        assert d.stop(signal.SIGTERM) == 0
        text = "".join(d.lines)
        assert text.count("dev agent key generated") == 1
        assert "signal SIGTERM: shutting down" in text


def test_no_api_generates_no_admin_key_and_sigint_exits_0() -> None:
    with daemon("-p", "0", "--no-api", "--agent-key", KEY) as d:
        line = d.wait_line(STARTUP)
        assert line["api"] == "off" and line["grpc"] == "off"
        assert d.stop(signal.SIGINT) == 0
        text = "".join(d.lines)
        assert "generated" not in text and KEY not in text


def test_precedence_flags_over_env_over_yaml(tmp_path: Path) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_text(
        "heartbeat_ms: 900\ncommand_timeout_ms: 1234\nagent_key: [yaml-key-0123456789abcdef]\n"
        "admin_key: yaml-admin-0123456789abcdef\napi: true\ngrpc_port: null\n"
    )
    env = {"FLEET_HEARTBEAT_MS": "700", "FLEET_PORT": "0"}
    with daemon("--config", str(path), env=env) as d:
        assert d.wait_line(STARTUP)["hb"] == "700"  # env beats YAML
        assert d.stop() == 0
        assert "generated" not in "".join(d.lines)  # YAML keys were used
    with daemon("--config", str(path), "--heartbeat", "800", env=env) as d:
        assert d.wait_line(STARTUP)["hb"] == "800"  # flags beat env
        assert d.stop() == 0
    with daemon("--config", str(path), "-p", "0") as d:
        line = d.wait_line(STARTUP)
        assert line["hb"] == "900" and line["grpc"] == "off"  # YAML beats defaults
        assert d.stop() == 0


def test_metrics_auth_comes_from_a_flag_env_or_yaml(tmp_path: Path) -> None:
    from fleet_server._config import build_parser, load_config

    def metrics_auth(args: list[str], env: dict[str, str]) -> bool:
        return load_config(build_parser("0").parse_args(args), env).options.metrics_auth

    path = tmp_path / "fleet.yaml"
    path.write_text("metrics_auth: true\n")
    assert metrics_auth([], {}) is False
    assert metrics_auth(["--metrics-auth"], {}) is True
    assert metrics_auth([], {"FLEET_METRICS_AUTH": "true"}) is True
    assert metrics_auth(["--config", str(path)], {}) is True
    assert metrics_auth(["--config", str(path)], {"FLEET_METRICS_AUTH": "false"}) is False


def test_agent_tokens_come_from_a_flag_env_or_yaml(tmp_path: Path) -> None:
    from fleet_server._config import build_parser, load_config

    def agent_tokens(args: list[str], env: dict[str, str]) -> bool:
        return load_config(build_parser("0").parse_args(args), env).options.agent_tokens

    path = tmp_path / "fleet.yaml"
    path.write_text("agent_tokens: false\n")
    assert agent_tokens([], {}) is True
    assert agent_tokens(["--no-agent-tokens"], {}) is False
    assert agent_tokens([], {"FLEET_AGENT_TOKENS": "false"}) is False
    assert agent_tokens(["--config", str(path)], {}) is False
    assert agent_tokens(["--config", str(path)], {"FLEET_AGENT_TOKENS": "true"}) is True


def test_an_admin_key_and_no_agent_key_is_token_only_mode() -> None:
    with daemon("-p", "0", "--no-grpc", env={"FLEET_ADMIN_KEY": ADMIN}) as d:
        d.wait_line(r"no agent key: token-only mode")
        port = int(d.wait_line(STARTUP)["port"])
        statuses = asyncio.run(_token_only_statuses(port))
        assert statuses == {"minted": 201, "token": 101, "key": 401}
        assert d.stop(signal.SIGTERM) == 0
        assert "dev agent key generated" not in "".join(d.lines)


async def _token_only_statuses(port: int) -> dict[str, int]:
    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"http://127.0.0.1:{port}/v1/agent-tokens",
            headers={"Authorization": f"Bearer {ADMIN}"},
        ) as reply:
            minted = reply.status
            token = (await reply.json())["data"]["token"]

        async def handshake(credential: str) -> int:
            try:
                ws = await session.ws_connect(
                    f"http://127.0.0.1:{port}/", protocols=(wire.SUBPROTOCOL, credential)
                )
            except aiohttp.WSServerHandshakeError as exc:
                return exc.status
            await ws.close()
            return 101

        return {"minted": minted, "token": await handshake(token), "key": await handshake(KEY)}


def test_env_key_lists_split_on_commas() -> None:
    from fleet_server._config import build_parser, load_config

    args = build_parser("0").parse_args([])
    config = load_config(args, {"FLEET_AGENT_KEY": "old, new ,newer", "FLEET_GRPC_PORT": "off"})
    assert config.options.agent_keys == ("old", "new", "newer") and config.options.grpc_port is None
    flags = build_parser("0").parse_args(["--agent-key", "a", "--agent-key", "b", "--cors", "x"])
    config = load_config(flags, {"FLEET_AGENT_KEY": "env1,env2", "FLEET_CORS_ORIGINS": "y,z"})
    assert config.options.agent_keys == ("a", "b") and config.options.cors_origins == ("x",)
    same = load_config(build_parser("0").parse_args(["-H", "127.0.0.1", "-p", "9000"]), {})
    long = load_config(build_parser("0").parse_args(["--host=127.0.0.1", "--port=9000"]), {})
    assert same == long and same.options.port == 9000
    defaults = load_config(build_parser("0").parse_args([]), {})
    assert (defaults.options.host, defaults.options.port, defaults.options.grpc_port) == (
        "0.0.0.0",
        7350,
        7351,
    )
    assert (defaults.options.heartbeat_ms, defaults.options.command_timeout_ms) == (5000, 10000)


def test_port_in_use_is_one_clear_line_exit_1() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with daemon("-p", str(port), "--no-grpc", "--agent-key", KEY, "--admin-key", ADMIN) as d:
            code = d.proc.wait(timeout=20)
            assert d.proc.stderr is not None
            err = d.proc.stderr.read()
    assert code == 1
    assert f"cannot listen on 127.0.0.1:{port}" in err
    assert "Traceback" not in err


def test_example_config_documents_every_yaml_key_and_loads() -> None:
    import yaml

    from fleet_server._config import YAML_KEYS, build_parser, load_config

    path = ROOT / "examples" / "fleet.yaml"
    assert set(yaml.safe_load(path.read_text())) == set(YAML_KEYS)
    config = load_config(build_parser("0").parse_args(["--config", str(path)]), {})
    assert config.options.grpc_port == 7351 and config.options.cors_origins


def test_the_part_two_settings_come_from_flags_env_or_yaml(tmp_path: Path) -> None:
    """CONTRACT §9, §10, §14: each key reaches the orchestrator's options, flags over
    env over YAML; ``FLEET_ETCD`` is a comma list, ``--etcd`` repeats."""
    from fleet_server._config import build_parser, load_config

    def options(args: list[str], env: dict[str, str]) -> Any:
        return load_config(build_parser("0").parse_args(args), env).options

    path = tmp_path / "fleet.yaml"
    path.write_text(
        json.dumps(
            {
                "orphan_hold_ms": 9000,
                "state_path": str(tmp_path / "state.json"),
                "settle_ms": 700,
                "etcd_endpoints": ["http://127.0.0.1:2379"],
                "cluster": "blue",
                "advertise_url": "http://10.0.0.5:7350",
                "leader_lease_ms": 4000,
                "capacity_label": "zone",
                "webhooks": [
                    {"url": "https://hooks.example/in", "events": ["sync"], "secret": "s" * 20}
                ],
            }
        )
    )
    yaml = options(["--config", str(path)], {})
    assert (yaml.orphan_hold_ms, yaml.settle_ms, yaml.leader_lease_ms) == (9000, 700, 4000)
    assert yaml.state_path == str(tmp_path / "state.json")
    assert tuple(yaml.etcd_endpoints) == ("http://127.0.0.1:2379",)
    assert (yaml.cluster, yaml.advertise_url, yaml.capacity_label) == (
        "blue",
        "http://10.0.0.5:7350",
        "zone",
    )
    [hook] = yaml.webhooks
    assert (hook.url, tuple(hook.events)) == ("https://hooks.example/in", ("sync",))
    env = {"FLEET_ETCD": "http://a:2379,http://b:2379", "FLEET_CLUSTER": "green"}
    from_env = options(["--config", str(path)], env)
    assert tuple(from_env.etcd_endpoints) == ("http://a:2379", "http://b:2379")
    assert from_env.cluster == "green"
    flags = ["--config", str(path), "--etcd", "http://c:2379", "--etcd", "http://d:2379"]
    flags += ["--cluster", "red", "--settle", "50", "--orphan-hold", "1000"]
    from_flags = options(flags, env)
    assert tuple(from_flags.etcd_endpoints) == ("http://c:2379", "http://d:2379")
    assert (from_flags.cluster, from_flags.settle_ms, from_flags.orphan_hold_ms) == (
        "red",
        50,
        1000,
    )
    defaults = options([], {})
    assert (defaults.orphan_hold_ms, defaults.settle_ms, defaults.leader_lease_ms) == (
        60_000,
        15_000,
        5000,
    )
    assert (tuple(defaults.etcd_endpoints), defaults.capacity_label) == ((), "region")
