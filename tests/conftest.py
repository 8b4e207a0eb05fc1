"""Fixtures every test package can use."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Iterator

import pytest

from fleet_server import Orchestrator
from tests.support.agents import RawAgents
from tests.support.etcd import MISSING, EtcdServer


@pytest.fixture
async def agents(orch: Orchestrator) -> AsyncIterator[RawAgents]:
    """Factory: ``await agents(name=..., ...)`` connects a RawAgent to the package's ``orch``
    fixture and waits until it is in the read model; every one is closed at teardown."""
    async with RawAgents(orch) as factory:
        yield factory


@pytest.fixture
def etcd() -> Iterator[EtcdServer]:
    """A real etcd of its own for the test, on ephemeral ports; the test fails (never skips)
    when etcd is not installed."""
    if shutil.which("etcd") is None:
        pytest.fail(MISSING, pytrace=False)
    with EtcdServer() as server:
        yield server
