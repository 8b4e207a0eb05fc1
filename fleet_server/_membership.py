"""The membership store (CONTRACT §9): which processes were joined and which ids are held.

:class:`Membership` is the record and its JSON form (version 1, see
``docs/high-availability.md``); a :class:`MembershipStore` keeps it — :class:`FileStore`
in one file replaced atomically, or etcd (``_etcd_store``) — and a :class:`Recorder`
writes the latest record within a second of a change, coalesced, off the poll path.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from json.encoder import encode_basestring_ascii
from pathlib import Path
from typing import Any, Final, Protocol

from ._agent_tokens import AgentTokenRecord
from ._orphans import OrphanHold

__all__ = [
    "FileStore",
    "Membership",
    "MembershipError",
    "MembershipStore",
    "Recorder",
]

log = logging.getLogger("fleet.server")

VERSION: Final = 1
SAVE_DELAY_S: Final = 0.25  # changes within this share one write; well inside 1 s
SAVE_DELAY_PER_ENTRY_S: Final = 0.5 / 10_000  # and longer as the record grows,
MAX_SAVE_DELAY_S: Final = 0.75  # to at most this: a record is still stored within 1 s


class MembershipError(ValueError):
    """A stored record that cannot be read; the message says what is wrong."""


@dataclass(frozen=True, slots=True)
class Membership:
    """Processes (uid → last seen, ms), orphan holds and agent-token records (with
    their revocations), as of ``saved_at`` (ms)."""

    processes: Mapping[str, int] = field(default_factory=dict)
    orphans: tuple[OrphanHold, ...] = ()
    saved_at: int = 0
    agent_tokens: tuple[AgentTokenRecord, ...] = ()

    def to_json(self) -> bytes:
        """The stored form: compact JSON, processes and holds written entry by entry
        (a fleet's record is tens of thousands of them; no dict is built per entry)."""
        quote = encode_basestring_ascii
        processes = ",".join(
            f'{quote(uid)}:{{"lastSeenAt":{int(at)}}}' for uid, at in self.processes.items()
        )
        orphans = ",".join(
            f'{{"id":{quote(h.room_id)},"processUid":{quote(h.process_uid)},'
            f'"expiresAt":{int(h.expires_at)}}}'
            for h in self.orphans
        )
        tokens = json.dumps(
            [record.to_json() for record in self.agent_tokens], separators=(",", ":")
        )
        return (
            f'{{"version":{VERSION},"savedAt":{int(self.saved_at)},"processes":{{{processes}}},'
            f'"orphans":[{orphans}],"agentTokens":{tokens}}}'
        ).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Membership:
        try:
            payload = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise MembershipError("not JSON") from None
        if not isinstance(payload, dict) or payload.get("version") != VERSION:
            raise MembershipError(f"not a version {VERSION} membership record")
        try:
            processes = {
                _text(uid): _int(entry["lastSeenAt"])
                for uid, entry in _mapping(payload["processes"]).items()
            }
            orphans = tuple(
                OrphanHold(_text(o["id"]), _text(o["processUid"]), _int(o["expiresAt"]))
                for o in _list(payload["orphans"])
            )
            tokens = tuple(  # absent in records written before agent tokens
                AgentTokenRecord.from_json(entry) for entry in _list(payload.get("agentTokens", []))
            )
            return cls(processes, orphans, _int(payload["savedAt"]), tokens)
        except (KeyError, TypeError) as exc:
            raise MembershipError(f"malformed record ({type(exc).__name__}: {exc})") from None


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise TypeError("expected a non-empty string")
    return value


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError("expected an integer")
    return value


def _mapping(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
        raise TypeError("expected an object of objects")
    return value


def _list(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise TypeError("expected a list of objects")
    return value


class MembershipStore(Protocol):
    """Where the record lives; ``where`` names it in log lines (never a secret)."""

    @property
    def where(self) -> str: ...

    async def load(self) -> Membership | None:
        """The stored record, None when there is none; MembershipError when unreadable."""
        ...

    async def save(self, membership: Membership) -> bool:
        """Store it; False when this node may no longer write (a deposed leader)."""
        ...


class FileStore:
    """One JSON file, written to ``<path>.tmp``, fsynced and renamed over the old one:
    a crash leaves the old record or the new, never half of one."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._path = Path(path)

    @property
    def where(self) -> str:
        return f"file {self._path}"

    async def load(self) -> Membership | None:
        try:
            data = await asyncio.to_thread(self._path.read_bytes)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise MembershipError(f"cannot read {self._path}: {exc.strerror or exc}") from None
        return Membership.from_json(data)

    async def save(self, membership: Membership) -> bool:
        await asyncio.to_thread(self._write, membership.to_json())
        return True

    def _write(self, data: bytes) -> None:
        tmp = self._path.with_name(self._path.name + ".tmp")
        self._path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, self._path)
        with contextlib.suppress(OSError):  # the rename itself, on filesystems that need it
            fd = os.open(self._path.parent, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


class Recorder:
    """Writes ``capture()`` to ``store`` shortly after :meth:`changed`, one write at a
    time; a failed write is logged and retried on the next change or in a second.

    Every write encodes the whole record on the event loop, so changes share one write
    for :attr:`delay_s`: 0.25 s, plus 50 ms per 1,000 processes and holds in the last
    record, at most 0.75 s (at 10,000 processes a write costs tens of ms, and every
    agent rejoining after a takeover is a change)."""

    def __init__(self, store: MembershipStore, capture: Callable[[], Membership]) -> None:
        self._store = store
        self._capture = capture
        self._dirty = False
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._lock = asyncio.Lock()
        self._entries = 0  # processes and holds in the last record written
        self.saves = 0

    @property
    def delay_s(self) -> float:
        """How long a change waits for the changes that follow it to share its write."""
        return min(MAX_SAVE_DELAY_S, SAVE_DELAY_S + self._entries * SAVE_DELAY_PER_ENTRY_S)

    def changed(self) -> None:
        self._dirty = True
        if self._task is None and not self._closed:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        try:
            while self._dirty and not self._closed:
                await asyncio.sleep(self.delay_s)
                await self._save_once()
        finally:
            self._task = None

    async def _save_once(self) -> None:
        if not await self._write() and not self._closed:
            await asyncio.sleep(1.0)  # then the loop tries again

    async def flush(self) -> bool:
        """Write the latest record now, after any write under way (a revocation answers
        once it is stored); False when it could not be written (logged, retried)."""
        if self._closed:
            return False
        written = await self._write()
        if not written and self._dirty:
            self.changed()
        return written

    async def _write(self) -> bool:
        async with self._lock:  # one write at a time: a file store reuses its temp file
            self._dirty = False
            started = time.perf_counter()
            try:
                membership = self._capture()
                self._entries = len(membership.processes) + len(membership.orphans)
                if not await self._store.save(membership):
                    log.warning(
                        "membership not saved to %s: no longer the leader", self._store.where
                    )
                    return False
            except Exception as exc:
                log.warning("membership save to %s failed: %s", self._store.where, exc)
                self._dirty = True
                return False
            self.saves += 1
            log.debug(
                "membership saved to %s in %.1f ms",
                self._store.where,
                (time.perf_counter() - started) * 1000,
            )
            return True

    async def close(self, *, final: bool) -> None:
        """Stop; with ``final``, write the latest record once more (shutdown)."""
        self._closed = True
        task = self._task
        if task is not None:  # never cut a write short: let it finish, then stop
            await asyncio.shield(task)
        if final:
            await self._write()
