"""FleetAgent validates its options early; errors name the option (SPEC §13.1)."""

from __future__ import annotations

import re
import socket
from typing import Any

import pytest

from fleet_agent import Backoff, Capacity, FleetAgent, RoomManager

from .fake_orchestrator import KEY


def make(**options: Any) -> FleetAgent:
    options.setdefault("url", "ws://127.0.0.1:7350")
    options.setdefault("key", KEY)
    options.setdefault("endpoint_url", "wss://eu1.example.com/game")
    return FleetAgent(RoomManager(), **options)


def test_defaults() -> None:
    agent = make()
    assert agent.status == "closed"
    assert agent.instance_id is None
    assert agent.name == socket.gethostname()[:64]
    assert re.fullmatch(r"p_[0-9a-f]{24}", agent.process_uid)
    assert make().process_uid != agent.process_uid
    assert KEY not in repr(agent)


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("url", "127.0.0.1:7350"),
        ("url", "ftp://host"),
        ("url", "ws://"),
        ("endpoint_url", "javascript:alert(1)"),
        ("endpoint_url", "file:///etc/passwd"),
        ("endpoint_url", "/relative"),
        ("endpoint_url", "wss://" + "a" * 507),
        ("name", "n" * 65),
        ("labels", {f"k{i}": "v" for i in range(33)}),
        ("labels", {"k" * 65: "v"}),
        ("labels", {"k": "v" * 65}),
        ("labels", {"k": 1}),
        ("capacity", {"max_rooms": 1}),
        ("connect_timeout_ms", 0),
        ("connect_timeout_ms", -5),
        ("auto_create", "yes"),
        ("backoff", (1, 2)),
    ],
)
def test_bad_options_raise_value_error_naming_the_option(option: str, value: Any) -> None:
    with pytest.raises(ValueError, match=option):
        make(**{option: value})


@pytest.mark.parametrize("key", ["", "has,comma", "has space", "tab\tkey", "ключ"])
def test_bad_keys_are_refused_without_quoting_them(key: str) -> None:
    with pytest.raises(ValueError, match="key") as info:
        make(key=key)
    if key:
        assert key not in str(info.value)


def test_the_key_may_not_travel_in_the_url() -> None:
    with pytest.raises(ValueError, match="url") as info:
        make(url=f"ws://127.0.0.1:7350/?key={KEY}")
    assert KEY not in str(info.value)


def test_url_may_be_one_url_or_a_list_of_them_and_url_names_the_first_before_connect() -> None:
    assert make(url="ws://a:7350").url == "ws://a:7350"
    urls = ["ws://a:7350", "wss://b.example/fleet"]
    assert make(url=urls).url == "ws://a:7350"
    assert make(url=tuple(urls)).url == "ws://a:7350"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ([], "non-empty list"),
        ((), "non-empty list"),
        (b"ws://a:7350", "non-empty list"),
        (None, "non-empty list"),
        (["ws://a:7350", "ftp://b"], r"url\[1\] must be an absolute"),
        (["ws://a:7350", ""], r"url\[1\] must be a non-empty string"),
        (["ws://a:7350", 7], r"url\[1\] must be a non-empty string"),
        (["ws://a:7350", "WS://A:7350/"], r"url\[1\] repeats"),
        ("ws://a:7350,ws://b:7350", "pass a list"),
    ],
)
def test_bad_url_lists_are_refused_naming_the_entry(url: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make(url=url)


def test_the_key_may_not_travel_in_any_listed_url() -> None:
    with pytest.raises(ValueError, match="url") as info:
        make(url=["ws://a:7350", f"ws://b:7350/?key={KEY}"])
    assert KEY not in str(info.value)


def test_limits_pass_at_the_boundary() -> None:
    agent = make(
        endpoint_url="https://" + "a" * 504,
        name="n" * 64,
        labels={f"k{i:02}" + "k" * 61: "v" * 64 for i in range(32)},
        capacity=Capacity(max_connections=0, max_rooms=0),
        connect_timeout_ms=1,
    )
    assert agent.name == "n" * 64


def test_a_host_must_implement_room_host() -> None:
    with pytest.raises(TypeError, match="RoomHost"):
        FleetAgent(object(), url="ws://h", key=KEY, endpoint_url="ws://e")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs", [{"max_connections": -1}, {"max_rooms": 2**31}, {"max_rooms": True}]
)
def test_capacity_values_are_checked(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        Capacity(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "option"),
    [
        ({"initial_ms": 0}, "initial_ms"),
        ({"max_ms": float("nan")}, "max_ms"),
        ({"initial_ms": 100, "max_ms": 50}, "max_ms"),
    ],
)
def test_backoff_values_are_checked(kwargs: dict[str, Any], option: str) -> None:
    with pytest.raises(ValueError, match=option):
        Backoff(**kwargs)


def test_option_dataclasses_are_frozen() -> None:
    assert Backoff() == Backoff(initial_ms=500, max_ms=30_000)
    assert Capacity() == Capacity(None, None)
    with pytest.raises(AttributeError):
        Capacity().max_rooms = 3  # type: ignore[misc]
