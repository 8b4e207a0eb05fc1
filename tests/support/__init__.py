"""Helpers shared by the test packages, one module per role.

``keys`` the agent and admin keys; ``ports`` free local ports; ``waits`` polling until a
condition holds; ``orchestrators`` embedded orchestrators; ``raw_agent`` a protocol-level
fake agent; ``agents`` factories for raw and real agents; ``agent_host`` and ``processes``
agents in subprocesses; ``clients`` REST and gRPC clients; ``figures`` measured figures.
"""
