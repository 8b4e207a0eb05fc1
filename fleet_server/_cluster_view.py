"""What a node knows of its cluster in etcd, and the JSON stored there
(docs/high-availability.md §3).

Under ``/rivalis-fleet/<cluster>/``:

- ``election/<lease id, hex>``: a candidate, ``{"id","url","grpcUrl","agentUrl"}``; the
  leader adds ``"since"`` (ms since the epoch) when it takes the lead;
- ``members/<node id>``: a live node, ``{"id","url","role"}``.

Both live on their node's lease. The candidate with the lowest create revision leads.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from ._etcd import Change, KeyValue

__all__ = ["ClusterView", "LeaderInfo", "MemberInfo", "NodeInfo", "Role"]

Role = Literal["leader", "standby"]


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """A candidate's advertised addresses."""

    id: str
    url: str
    grpc_url: str
    agent_url: str

    def to_json(self, since: int | None = None) -> bytes:
        doc: dict[str, Any] = {
            "id": self.id,
            "url": self.url,
            "grpcUrl": self.grpc_url,
            "agentUrl": self.agent_url,
        }
        if since is not None:
            doc["since"] = since
        return json.dumps(doc, separators=(",", ":")).encode()


@dataclass(frozen=True, slots=True)
class LeaderInfo:
    """The leader's addresses, and when it took the lead (ms since the epoch)."""

    id: str
    url: str
    grpc_url: str
    agent_url: str
    since: int


@dataclass(frozen=True, slots=True)
class MemberInfo:
    """A live node of the cluster."""

    id: str
    url: str
    role: Role

    def to_json(self) -> bytes:
        doc = {"id": self.id, "url": self.url, "role": self.role}
        return json.dumps(doc, separators=(",", ":")).encode()


def leader_from(raw: bytes) -> LeaderInfo | None:
    """The leader an election value describes, None unless it records ``since``."""
    doc = _object(raw)
    since = doc.get("since")
    fields = [doc.get(name) for name in ("id", "url", "grpcUrl", "agentUrl")]
    if not isinstance(since, int) or isinstance(since, bool):
        return None
    if not all(isinstance(value, str) for value in fields):
        return None
    id_, url, grpc_url, agent_url = (str(value) for value in fields)
    return LeaderInfo(id_, url, grpc_url, agent_url, since)


def member_from(raw: bytes) -> MemberInfo | None:
    doc = _object(raw)
    id_, url, role = doc.get("id"), doc.get("url"), doc.get("role")
    if isinstance(id_, str) and isinstance(url, str) and role in ("leader", "standby"):
        return MemberInfo(id_, url, "leader" if role == "leader" else "standby")
    return None


def _object(raw: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(raw)
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


class ClusterView:
    """The candidates and members of one cluster, from one range read (:meth:`reset`) and
    the watch that follows it (:meth:`apply`). ``revision`` is the etcd revision the view
    reflects, 0 before the first read."""

    def __init__(self, prefix: str) -> None:
        self.election_prefix = f"{prefix}election/"
        self.members_prefix = f"{prefix}members/"
        self.revision = 0
        self._candidates: dict[str, tuple[int, LeaderInfo | None]] = {}
        self._members: dict[str, MemberInfo] = {}

    def clear(self) -> None:
        self.revision = 0
        self._candidates.clear()
        self._members.clear()

    def reset(self, kvs: Iterable[KeyValue], revision: int) -> None:
        self.clear()
        for kv in kvs:
            self._put(kv)
        self.revision = revision

    def apply(self, changes: Iterable[Change]) -> None:
        for change in changes:
            if change.kind == "put":
                self._put(change.kv)
            else:
                self._candidates.pop(change.kv.key, None)
                self._members.pop(change.kv.key, None)
            self.revision = max(self.revision, change.kv.mod_revision)

    def _put(self, kv: KeyValue) -> None:
        if kv.key.startswith(self.election_prefix):
            self._candidates[kv.key] = (kv.create_revision, leader_from(kv.value))
        elif kv.key.startswith(self.members_prefix):
            member = member_from(kv.value)
            if member is None:
                self._members.pop(kv.key, None)
            else:
                self._members[kv.key] = member

    def has(self, key: str) -> bool:
        return key in self._candidates

    def first(self) -> str | None:
        """The election key with the lowest create revision: the leader's."""
        if not self._candidates:
            return None
        return min(self._candidates, key=lambda key: self._candidates[key][0])

    def leader(self) -> tuple[str, LeaderInfo] | None:
        """The first candidate's key and addresses, once it has recorded ``since``."""
        key = self.first()
        info = None if key is None else self._candidates[key][1]
        return None if key is None or info is None else (key, info)

    def members(self) -> list[MemberInfo]:
        return sorted(self._members.values(), key=lambda member: member.id)
