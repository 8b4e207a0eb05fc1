"""Selector semantics (docs/matchmaking.md §5) and the canonical form of reported room
metadata (§1–2), including the stateHash vector with the new fields."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleet_agent import wire
from fleet_server import ErrorCode, FleetError, Placement
from fleet_server._selectors import Expression, Selector, selectors_from_json
from fleet_server._snapshot import canonical_metadata
from tests.support.raw_agent import RawRoom

from .harness import harness

EU = {"region": "eu", "tier": "gold"}


@pytest.mark.parametrize(
    ("op", "values", "labels", "holds"),
    [
        ("In", ("eu", "us"), EU, True),
        ("In", ("us",), EU, False),
        ("In", ("eu",), {}, False),
        ("NotIn", ("us",), EU, True),
        ("NotIn", ("eu",), EU, False),
        ("NotIn", ("eu",), {}, True),  # an instance without the label matches NotIn
        ("Exists", (), EU, True),
        ("Exists", (), {}, False),
        ("DoesNotExist", (), {}, True),
        ("DoesNotExist", (), EU, False),
    ],
)
def test_expressions_follow_kubernetes_semantics(
    op: Any, values: tuple[str, ...], labels: dict[str, str], holds: bool
) -> None:
    assert Expression("region", op, values).holds(labels) is holds


def test_a_selector_needs_every_label_and_every_expression() -> None:
    selector = Selector(labels={"tier": "gold"}, expressions=(Expression("region", "In", ("eu",)),))
    assert selector.matches(EU)
    assert not selector.matches({**EU, "tier": "silver"})
    assert not selector.matches({"tier": "gold", "region": "us"})


@pytest.mark.parametrize(
    "value",
    [
        "x",
        [{"expressions": [{"key": "r", "op": "Near", "values": ["a"]}]}],
        [{"expressions": [{"key": "r", "op": "In"}]}],
        [{"expressions": [{"key": "r", "op": "Exists", "values": ["a"]}]}],
        [{"expressions": [{"key": "", "op": "Exists"}]}],
        [{"labels": {"a": 1}}],
        [{"other": {}}],
        [{}] * 17,
    ],
)
def test_malformed_selectors_are_validation_errors(value: Any) -> None:
    with pytest.raises(FleetError) as info:
        selectors_from_json(value)
    assert info.value.code is ErrorCode.VALIDATION


def test_labels_and_selectors_together_are_refused() -> None:
    with pytest.raises(FleetError) as info:
        Placement(labels={"a": "b"}, selectors=({"labels": {"a": "b"}},))
    assert info.value.code is ErrorCode.VALIDATION


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=12,
)


@given(st.dictionaries(st.text(max_size=6), _json, max_size=6))
def test_reported_metadata_is_canonical_whatever_the_key_order_or_spacing(
    value: dict[str, Any],
) -> None:
    canonical = wire.canonical_json(value)
    if len(canonical.encode()) > wire.MAX_METADATA_BYTES:
        assert canonical_metadata(canonical) is None
        return
    shuffled = json.dumps(dict(reversed(list(value.items()))), indent=1)
    assert canonical_metadata(shuffled) == canonical
    assert canonical_metadata(canonical) == canonical


@pytest.mark.parametrize("text", ["[]", '"x"', "1", "{", "{" + '"a":' * 4000])
def test_metadata_that_is_not_a_json_object_is_refused(text: str) -> None:
    assert canonical_metadata(text) is None


def test_metadata_at_the_byte_limit_passes_and_one_byte_over_is_refused() -> None:
    filler = "x" * (wire.MAX_METADATA_BYTES - len('{"k":""}'))
    assert canonical_metadata(json.dumps({"k": filler}, separators=(",", ":"))) is not None
    assert canonical_metadata(json.dumps({"k": filler + "x"}, separators=(",", ":"))) is None


async def test_the_state_hash_vector_with_the_new_fields() -> None:
    """docs/matchmaking.md §2: one instance as in the SPEC vector, its room r1 with
    metadata, maxConnections 10, locked and 2 reserved seats."""
    async with harness() as h:
        agent = await h.join(
            name="eu1",
            process_uid="p_1",
            endpoint_url="wss://eu1",
            labels={"region": "eu"},
            max_rooms=10,
            rooms={
                "r1": RawRoom(
                    "match", 3, "fleet", '{"mode":"ranked","teams":2}', max_connections=10
                )
            },
        )
        await h.orch.fleet.reserve_seats("match", 2)
        agent.rooms["r1"].locked = True  # a locked room keeps the seats it had reserved
        await h.applied(agent)
        entry = h.orch.fleet._read.instance(agent.instance_id).hash_entry()  # type: ignore[union-attr]
        expected = entry.replace(agent.instance_id.encode(), b"i_1")
        assert wire.hash64_text(f"[{expected.decode()}]") == "b0980037a9a76204"
