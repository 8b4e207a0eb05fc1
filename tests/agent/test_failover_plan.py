"""The dial plan alone: pass order, leader hints, where the pass after a drop begins."""

from __future__ import annotations

import pytest

from fleet_agent._failover import DialPlan, url_key

A, B, C = "ws://a:7350", "ws://b:7350", "ws://c:7350"


def drain(plan: DialPlan) -> list[str]:
    order = []
    while (url := plan.next()) is not None:
        order.append(url)
    return order


def test_a_pass_dials_every_url_once_in_order_wrapping_from_its_first() -> None:
    plan = DialPlan([A, B, C])
    assert plan.current == A
    plan.begin()
    assert drain(plan) == [A, B, C]
    plan.begin(B)
    assert drain(plan) == [B, C, A]
    assert plan.current == A


def test_a_first_url_that_is_not_listed_comes_before_the_list() -> None:
    plan = DialPlan([A, B])
    plan.begin(C)
    assert drain(plan) == [C, A, B]


def test_a_hint_is_dialled_next_once_per_pass_and_never_back_to_a_dialled_url() -> None:
    plan = DialPlan([A, B, C])
    plan.begin()
    assert plan.next() == A
    assert not plan.follow(A + "/")  # the URL that just refused
    assert plan.follow(C)
    assert plan.next() == C
    assert not plan.follow("ws://d:7350")  # one hint per pass
    assert drain(plan) == [B]  # C was dialled already
    plan.begin()
    assert plan.next() == A and plan.follow("ws://d:7350")


def test_after_names_the_next_listed_url_wrapping_and_the_first_for_others() -> None:
    plan = DialPlan([A, B])
    assert plan.after(A) == B
    assert plan.after(B) == A
    assert plan.after(C) == A
    assert DialPlan([A]).after(A) == A


@pytest.mark.parametrize(
    ("one", "other"),
    [("ws://A:7350", "ws://a:7350/"), ("ws://a", "ws://a:80"), ("wss://a/", "wss://a:443")],
)
def test_url_key_ignores_case_default_ports_and_an_empty_path(one: str, other: str) -> None:
    assert url_key(one) == url_key(other)
    assert url_key("ws://a:7350/x") != url_key("ws://a:7350/y")
