"""Placement selectors (CONTRACT §11, docs/matchmaking.md §5): label matches and set-based
expressions with Kubernetes semantics, tried in order."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal, cast, get_args

from ._errors import ErrorCode, FleetError

__all__ = ["Expression", "Selector", "SelectorOp", "selectors_from_json"]

SelectorOp = Literal["In", "NotIn", "Exists", "DoesNotExist"]
_OPS: Final = frozenset(get_args(SelectorOp))
MAX_SELECTORS: Final = 16
MAX_EXPRESSIONS: Final = 32


def _invalid(message: str) -> FleetError:
    return FleetError(ErrorCode.VALIDATION, message)


def _labels(value: Any, what: str) -> dict[str, str]:
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise _invalid(f"{what} must map strings to strings")
    return dict(value)


@dataclass(frozen=True, slots=True)
class Expression:
    """``key`` ``op`` ``values``: one set-based requirement on an instance's labels."""

    key: str
    op: SelectorOp
    values: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.key, str) or not self.key:
            raise _invalid("selector expression key must be a non-empty string")
        if self.op not in _OPS:
            raise _invalid("selector expression op must be In, NotIn, Exists or DoesNotExist")
        values = self.values
        if isinstance(values, str) or not all(isinstance(v, str) for v in values):
            raise _invalid("selector expression values must be a list of strings")
        object.__setattr__(self, "values", tuple(values))
        if self.op in ("In", "NotIn") and not values:
            raise _invalid(f"selector expression {self.op} needs values")
        if self.op in ("Exists", "DoesNotExist") and values:
            raise _invalid(f"selector expression {self.op} takes no values")

    def holds(self, labels: Mapping[str, str]) -> bool:
        value = labels.get(self.key)
        op = self.op
        if op == "In":
            return value is not None and value in self.values
        if op == "NotIn":
            return value is None or value not in self.values
        if op == "Exists":
            return value is not None
        return value is None


@dataclass(frozen=True, slots=True)
class Selector:
    """Matches an instance whose labels equal ``labels`` and satisfy every expression."""

    labels: Mapping[str, str] = field(default_factory=dict)
    expressions: tuple[Expression, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", _labels(self.labels, "selector labels"))
        expressions = tuple(self.expressions)
        if len(expressions) > MAX_EXPRESSIONS:
            raise _invalid(f"a selector takes at most {MAX_EXPRESSIONS} expressions")
        if not all(isinstance(e, Expression) for e in expressions):
            raise _invalid("selector expressions must be Expression objects")
        object.__setattr__(self, "expressions", expressions)

    def matches(self, labels: Mapping[str, str]) -> bool:
        for key, value in self.labels.items():
            if labels.get(key) != value:
                return False
        return all(expression.holds(labels) for expression in self.expressions)


def selectors_from_json(value: Any) -> tuple[Selector, ...]:
    """``placement.selectors`` from a JSON body; ``VALIDATION`` naming what is wrong."""
    if not isinstance(value, list):
        raise _invalid("placement selectors must be a list")
    if len(value) > MAX_SELECTORS:
        raise _invalid(f"placement takes at most {MAX_SELECTORS} selectors")
    return tuple(_selector_from_json(item) for item in value)


def _selector_from_json(item: Any) -> Selector:
    if not isinstance(item, Mapping) or set(item) - {"labels", "expressions"}:
        raise _invalid("a selector is an object with labels and/or expressions")
    expressions = item.get("expressions") or []
    if not isinstance(expressions, list):
        raise _invalid("selector expressions must be a list")
    return Selector(
        labels=_labels(item.get("labels") or {}, "selector labels"),
        expressions=tuple(_expression_from_json(e) for e in expressions),
    )


def _expression_from_json(item: Any) -> Expression:
    if not isinstance(item, Mapping) or set(item) - {"key", "op", "values"}:
        raise _invalid("a selector expression is an object with key, op and values")
    values = item.get("values") or []
    if not isinstance(values, Sequence) or isinstance(values, str):
        raise _invalid("selector expression values must be a list of strings")
    key, op = item.get("key"), item.get("op")
    if not isinstance(key, str) or not isinstance(op, str) or op not in _OPS:
        raise _invalid("a selector expression needs a key and op In, NotIn, Exists or DoesNotExist")
    return Expression(key=key, op=cast(SelectorOp, op), values=tuple(values))
