"""A fleet-scale load generator: simulated agents speaking the real protocol 3.

Thousands of agents per process over several processes (:class:`LoadGenerator`), each
a raw WebSocket client (:mod:`._wsclient`) answering polls and commands with
precomputed frames (:mod:`._frames`). The orchestrator under test runs alone in its
own process (:class:`OrchestratorProcess`, :mod:`.target`) so its CPU time and RSS can
be read from ``/proc``. ``python -m tools.loadgen --help`` runs it from the shell.
"""

from ._generator import AGENT_KEY, LoadConfig, LoadGenerator, LoadReport
from ._histogram import Histogram
from ._process import ADMIN_KEY, OrchestratorProcess, ServerProcess, cpu_seconds, rss_bytes

__all__ = [
    "ADMIN_KEY",
    "AGENT_KEY",
    "Histogram",
    "LoadConfig",
    "LoadGenerator",
    "LoadReport",
    "OrchestratorProcess",
    "ServerProcess",
    "cpu_seconds",
    "rss_bytes",
]
