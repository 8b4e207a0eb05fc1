"""The load generator drives a real orchestrator and reports what its agents saw."""

from __future__ import annotations

import time

from tools.loadgen import LoadConfig, LoadGenerator, OrchestratorProcess


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
