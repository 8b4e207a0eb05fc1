"""One options object owns every default and every check (CONTRACT §6, §8)."""

from __future__ import annotations

from dataclasses import fields

import pytest

from fleet_server import Orchestrator
from fleet_server._options import OrchestratorKeywords, OrchestratorOptions, check_option

KEY = "agent-key-0123456789abcdef"
ADMIN = "admin-key-0123456789abcdef"


def test_the_typed_keywords_are_exactly_the_options_besides_host_and_port() -> None:
    aliases = {"agent_key": "agent_keys", "admin_key": "admin_keys"}
    keywords = {aliases.get(name, name) for name in OrchestratorKeywords.__annotations__}
    assert keywords == {f.name for f in fields(OrchestratorOptions)} - {"host", "port"}


def test_keywords_and_an_options_object_give_the_same_orchestrator() -> None:
    by_keywords = Orchestrator("127.0.0.1", 0, agent_key=KEY, admin_key=[ADMIN], heartbeat_ms=250)
    options = OrchestratorOptions(
        host="127.0.0.1", port=0, agent_keys=(KEY,), admin_keys=(ADMIN,), heartbeat_ms=250
    )
    assert by_keywords.options == options == Orchestrator(options=options).options


def test_options_and_keywords_together_are_refused() -> None:
    options = OrchestratorOptions(agent_keys=(KEY,), admin_keys=(ADMIN,))
    with pytest.raises(TypeError):
        Orchestrator(options=options, heartbeat_ms=100)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("port", 70000),
        ("port", True),
        ("heartbeat_ms", 0),
        ("grpc_port", -1),
        ("api", "yes"),
        ("cors_origins", "https://a.example"),
        ("sse_stream_limit", 1.5),
        ("metrics_auth", "yes"),
    ],
)
def test_a_bad_value_names_its_option(name: str, value: object) -> None:
    with pytest.raises(ValueError, match=name):
        check_option(name, value)
    with pytest.raises(ValueError, match=name):
        OrchestratorOptions(**{name: value})  # type: ignore[arg-type]


def test_metrics_auth_needs_an_admin_key_even_without_the_api() -> None:
    with pytest.raises(ValueError, match="metrics_auth"):
        Orchestrator(agent_key=KEY, api=False, metrics_auth=True)
    assert Orchestrator(agent_key=KEY, admin_key=ADMIN, api=False, metrics_auth=True)


def test_without_the_api_there_is_no_grpc_port() -> None:
    assert OrchestratorOptions(api=False, grpc_port=7351).grpc_port is None


def test_an_unknown_keyword_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="colour"):
        OrchestratorOptions.from_keywords(colour="blue")
