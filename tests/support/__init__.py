"""Helpers shared by the test packages, one module per role.

``keys``: the agent and admin keys. ``ports``: free local ports. ``waits``: polling until
a condition holds. ``orchestrators``: embedded orchestrators and a daemon's environment.
``raw_agent``: a protocol-level fake agent. ``agents``: factories for raw and real agents.
``clients``: REST and gRPC clients. ``figures``: measured figures, printed.
"""
