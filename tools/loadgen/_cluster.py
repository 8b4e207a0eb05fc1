"""An orchestrator cluster under test: one real etcd and several orchestrator processes.

:class:`OrchestratorCluster` starts etcd (``tests.support.etcd.EtcdServer``: 127.0.0.1,
ephemeral ports, a temporary data dir) and ``nodes`` :class:`OrchestratorProcess` nodes
campaigning in one cluster (CONTRACT §10), each on its own ephemeral ports.
:func:`watch_takeover` times what follows a leader's death, from the outside, over the
REST API only: when a node first says it leads, when its read model holds the fleet
again, and when a create with a generated id, then one with an explicit id (which waits
for settling), first succeeds.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final, Self

import aiohttp

from tests.support.etcd import EtcdServer

from ._process import ADMIN_KEY, OrchestratorProcess

__all__ = ["OrchestratorCluster", "TakeoverTimes", "watch_takeover"]

_AUTH: Final = {"Authorization": f"Bearer {ADMIN_KEY}"}
_PERIOD_S: Final = 0.025  # between two probes of one kind
# GET /v1/stats costs O(fleet) while the fleet changes (it re-derives the stateHash), so
# once agents are coming back the new leader is asked less often.
_STATS_PERIOD_S: Final = 0.25
_SHARES: Final = (0.5, 0.9, 0.99)  # of the fleet back on the new leader, timed too


class OrchestratorCluster:
    """``with OrchestratorCluster(3, lease_ms=5000) as cluster: cluster.wait_leader()``.

    Nodes start in order, so the first usually wins the first election; ``extra`` adds
    options to every node (``--settle-ms``, …)."""

    def __init__(
        self,
        nodes: int,
        *,
        heartbeat_ms: int = 1000,
        lease_ms: int = 5000,
        name: str = "bench",
        extra: list[str] | None = None,
    ) -> None:
        self.name = name
        self.etcd = EtcdServer()
        self.nodes: list[OrchestratorProcess] = []
        try:
            self.etcd.start()
            args = ["--etcd", self.etcd.endpoint, "--cluster", name]
            args += ["--leader-lease-ms", str(lease_ms), *(extra or [])]
            for _ in range(nodes):
                self.nodes.append(OrchestratorProcess(heartbeat_ms=heartbeat_ms, extra=args))
        except BaseException:
            self.close()
            raise

    @property
    def agent_urls(self) -> tuple[str, ...]:
        return tuple(node.agent_url for node in self.nodes)

    @property
    def live(self) -> list[OrchestratorProcess]:
        return [node for node in self.nodes if node.proc.poll() is None]

    def role(self, node: OrchestratorProcess) -> dict[str, Any] | None:
        """``GET /v1/cluster`` of ``node`` (its ``data``), None when it does not answer
        within 30 s (a leader whose loop is saturated by a joining fleet answers late:
        seconds for the accept alone once its listen backlog is full)."""
        request = urllib.request.Request(f"{base_url(node)}/v1/cluster", headers=_AUTH)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                data: dict[str, Any] = json.loads(response.read())["data"]
                return data
        except (OSError, urllib.error.URLError, ValueError, KeyError):
            return None

    def wait_leader(self, timeout: float = 180.0) -> OrchestratorProcess:
        """The node that says it leads (and is settled)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for node in self.live:
                info = self.role(node)
                if info is not None and info["role"] == "leader" and info["settled"]:
                    return node
            time.sleep(0.05)
        raise TimeoutError(f"no node of cluster {self.name} leads")

    def recorded_processes(self) -> int:
        """How many processes the membership record in etcd lists (0 without one)."""
        key = f"/rivalis-fleet/{self.name}/membership".encode()
        body = json.dumps({"key": base64.b64encode(key).decode()}).encode()
        request = urllib.request.Request(f"{self.etcd.endpoint}/v3/kv/range", data=body)
        with urllib.request.urlopen(request, timeout=5) as response:
            kvs = json.loads(response.read()).get("kvs") or []
        if not kvs:
            return 0
        record = json.loads(base64.b64decode(kvs[0]["value"]))
        return len(record.get("processes", {}))

    def wait_recorded(self, count: int, timeout: float = 30.0) -> int:
        """Wait until the record lists ``count`` processes; how many it lists."""
        deadline = time.monotonic() + timeout
        recorded = self.recorded_processes()
        while recorded < count and time.monotonic() < deadline:
            time.sleep(0.1)
            recorded = self.recorded_processes()
        return recorded

    def close(self) -> None:
        for node in self.nodes:
            with contextlib.suppress(OSError):
                node.stop()
        self.etcd.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def base_url(node: OrchestratorProcess) -> str:
    return f"http://127.0.0.1:{node.port}"


@dataclass
class TakeoverTimes:
    """Seconds from the kill to each event (None: not seen before the deadline)."""

    leader: float | None = None
    leader_url: str | None = None
    first_back: float | None = None
    all_back: float | None = None
    generated_create: float | None = None
    explicit_create: float | None = None
    settled: float | None = None
    instances: int = 0  # on the new leader, at the end
    back: dict[str, float] = field(default_factory=dict)  # "50%" → seconds, …
    explicit_statuses: Counter[str] = field(default_factory=Counter)  # status / cause
    generated_statuses: Counter[str] = field(default_factory=Counter)

    def summary(self) -> dict[str, Any]:
        return {
            "leader_s": self.leader,
            "leader_url": self.leader_url,
            "first_back_s": self.first_back,
            "all_back_s": self.all_back,
            "generated_create_s": self.generated_create,
            "explicit_create_s": self.explicit_create,
            "settled_s": self.settled,
            "instances": self.instances,
            "back_s": self.back,
            "explicit_statuses": dict(self.explicit_statuses),
            "generated_statuses": dict(self.generated_statuses),
        }


async def watch_takeover(
    candidates: list[str], agents: int, started: float, timeout: float
) -> TakeoverTimes:
    """Probe the surviving nodes (``candidates``: base URLs) from ``started`` (the
    monotonic time of the kill) until every figure is in or ``timeout`` passes."""
    times = TakeoverTimes()
    deadline = started + timeout
    found = asyncio.Event()
    leader: list[str] = []

    def since() -> float:
        return time.monotonic() - started

    async def get(http: aiohttp.ClientSession, url: str) -> dict[str, Any] | None:
        try:
            async with http.get(url, headers=_AUTH) as response:
                if response.status != 200:
                    return None
                body: dict[str, Any] = await response.json()
                return body
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return None

    async def find_leader(http: aiohttp.ClientSession) -> None:
        while not found.is_set():
            for url in candidates:
                body = await get(http, f"{url}/v1/cluster")
                if body is not None and body["data"]["role"] == "leader":
                    times.leader, times.leader_url = since(), url
                    leader.append(url)
                    found.set()
                    return
            await asyncio.sleep(_PERIOD_S)

    async def count_back(http: aiohttp.ClientSession) -> None:
        await found.wait()
        while True:
            body = await get(http, f"{leader[0]}/v1/stats")
            if body is not None:
                times.instances = int(body["data"]["instances"])
                if times.instances and times.first_back is None:
                    times.first_back = since()
                for share in _SHARES:
                    if times.instances >= share * agents:
                        times.back.setdefault(f"{share:.0%}", since())
                if times.instances >= agents:
                    times.all_back = since()
                    return
            await asyncio.sleep(_PERIOD_S if times.first_back is None else _STATS_PERIOD_S)

    async def settle(http: aiohttp.ClientSession) -> None:
        await found.wait()
        while True:
            body = await get(http, f"{leader[0]}/v1/cluster")
            if body is not None and body["data"]["settled"]:
                times.settled = since()
                return
            await asyncio.sleep(_PERIOD_S)

    async def create(http: aiohttp.ClientSession, explicit: bool) -> None:
        await found.wait()
        statuses = times.explicit_statuses if explicit else times.generated_statuses
        attempt = 0
        while True:
            attempt += 1
            payload: dict[str, str] = {"type": "match"}
            if explicit:
                payload["roomId"] = f"takeover-{attempt}"
            try:
                async with http.post(
                    f"{leader[0]}/v1/rooms", json=payload, headers=_AUTH
                ) as response:
                    body = await response.read()
                    if response.status == 201:
                        if explicit:
                            times.explicit_create = since()
                        else:
                            times.generated_create = since()
                        return
                    cause = json.loads(body).get("cause", "?") if body else "?"
                    statuses[f"{response.status} {cause}"] += 1
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                statuses[type(exc).__name__] += 1
            await asyncio.sleep(_PERIOD_S)

    timeouts = aiohttp.ClientTimeout(total=5)
    async with aiohttp.ClientSession(timeout=timeouts) as http:
        jobs = [
            find_leader(http),
            count_back(http),
            settle(http),
            create(http, explicit=False),
            create(http, explicit=True),
        ]
        tasks = [asyncio.create_task(job) for job in jobs]
        try:
            await asyncio.wait(tasks, timeout=max(0.0, deadline - time.monotonic()))
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    return times
