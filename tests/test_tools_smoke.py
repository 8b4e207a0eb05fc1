"""The load generator drives a real orchestrator (or a cluster on a real etcd) and
reports what its agents saw."""

from __future__ import annotations

import asyncio
import time

from tools.loadgen import LoadConfig, LoadGenerator, OrchestratorProcess
from tools.loadgen._cluster import OrchestratorCluster, base_url, watch_takeover


def test_loadgen_runs_twenty_agents_against_a_port_zero_orchestrator_without_errors() -> None:
    with OrchestratorProcess(heartbeat_ms=250) as orch:
        assert orch.port > 0
        config = LoadConfig(url=orch.agent_url, agents=20, rooms=5, processes=1)
        with LoadGenerator(config) as load:
            assert load.wait_joined(timeout=10) == 20
            assert orch.wait_instances(20, timeout=5, rooms=100)
            load.set(churn_per_s=10.0)
            load.reset()
            time.sleep(3.0)
            report = load.report()
            stats = orch.stats()
    assert report.error_count == 0, report.errors
    assert report.polls > 0
    assert report.replies_hash > 0 and report.replies_full > 0
    assert report.evicted() == 0 and report.kicked() == 0
    assert stats["instances"] == 20 and stats["stale"] == {}


def test_loadgen_agents_follow_the_new_leader_after_the_leader_is_killed() -> None:
    """Agents given every node's URL find the leader through a standby's hint, and come
    back to the next leader after a SIGKILL; the takeover watcher sees each step."""
    with OrchestratorCluster(
        2, heartbeat_ms=250, lease_ms=2000, extra=["--settle-ms", "5000"]
    ) as cluster:
        leader = cluster.wait_leader(timeout=30)
        urls = cluster.agent_urls
        if leader is cluster.nodes[0]:  # dial the standby first: it must send them on
            urls = urls[::-1]
        config = LoadConfig(url=urls, agents=20, rooms=2, processes=1)
        with LoadGenerator(config) as load:
            assert load.wait_joined(timeout=20) == 20
            assert leader.wait_instances(20, timeout=10)
            assert cluster.wait_recorded(20, timeout=10) == 20
            started = time.monotonic()
            leader.proc.kill()
            survivors = [base_url(node) for node in cluster.live]
            times = asyncio.run(watch_takeover(survivors, 20, started, timeout=40))
            report = load.report()
    assert times.leader is not None and times.all_back is not None, times.summary()
    assert times.generated_create is not None and times.explicit_create is not None
    assert times.leader <= times.all_back and times.instances == 20
    assert report.error_count == 0, report.errors
    assert report.dial_failures["upgrade refused: HTTP 503"] >= 20  # the standby's hints
