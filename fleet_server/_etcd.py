"""The etcd client of the leader election: ``aetcd`` behind a small typed surface.

Every call is bounded in time, and every way etcd can fail to answer (refused, timed
out, an RPC error, a closed channel) is converted here, at the boundary, into
:class:`EtcdUnavailableError`, whose message names the endpoint and never a credential.
Watches and lease keepalives use etcd's own gRPC stubs (shipped with ``aetcd``) so that
each stream is opened and cancelled by the caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

import aetcd
import aetcd.rpc
import grpc

__all__ = [
    "BlockingLeases",
    "Change",
    "Endpoint",
    "EtcdClient",
    "EtcdUnavailableError",
    "KeyValue",
    "connect",
    "prefix_end",
]

log = logging.getLogger("fleet.server")

T = TypeVar("T")

_FAILURES: tuple[type[BaseException], ...] = (
    aetcd.ClientError,
    grpc.RpcError,
    grpc.aio.BaseError,
    TimeoutError,
    OSError,
)

_CHANNEL_OPTIONS = {
    # gRPC's reconnect backoff grows to two minutes by default; etcd back after a restart
    # should be seen within about a second.
    "grpc.initial_reconnect_backoff_ms": 100,
    "grpc.min_reconnect_backoff_ms": 100,
    "grpc.max_reconnect_backoff_ms": 1000,
}


class EtcdUnavailableError(Exception):
    """etcd did not answer; the message names the endpoint(s) tried, without credentials."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One etcd client URL: ``http://host:port`` (or ``host:port``; port 2379 if left out).
    User and password in the URL are used to authenticate and never shown."""

    host: str
    port: int
    username: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)

    @classmethod
    def parse(cls, text: str) -> Endpoint:
        parts = urlsplit(text if "://" in text else f"http://{text}")
        if parts.scheme != "http":
            raise ValueError(f"etcd endpoint {_redact(text)!r}: only http:// is supported")
        try:
            port = parts.port or 2379
        except ValueError as exc:
            raise ValueError(f"etcd endpoint {_redact(text)!r}: bad port") from exc
        if not parts.hostname:
            raise ValueError(f"etcd endpoint {_redact(text)!r}: no host")
        return cls(parts.hostname, port, parts.username, parts.password)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class KeyValue:
    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    lease: int


@dataclass(frozen=True, slots=True)
class Change:
    kind: Literal["put", "delete"]
    kv: KeyValue


class EtcdClient:
    """A connection to one etcd endpoint (see :func:`connect`); ``timeout`` bounds each
    call, in seconds."""

    def __init__(self, endpoint: Endpoint, *, timeout: float) -> None:
        self.endpoint = endpoint
        self._timeout = timeout
        host = f"[{endpoint.host}]" if ":" in endpoint.host else endpoint.host
        self._client: Any = aetcd.Client(
            host=host,
            port=endpoint.port,
            username=endpoint.username,
            password=endpoint.password,
            options=_CHANNEL_OPTIONS,
        )

    async def _call(self, what: str, call: Awaitable[T], timeout: float | None = None) -> T:
        try:
            async with asyncio.timeout(self._timeout if timeout is None else timeout):
                return await call
        except _FAILURES as exc:
            raise EtcdUnavailableError(
                f"etcd at {self.endpoint}: {what} failed ({_describe(exc)})"
            ) from exc
        except asyncio.CancelledError as exc:
            task = asyncio.current_task()
            if task is None or task.cancelling():
                raise  # the caller is being cancelled
            # gRPC cancels the calls of a channel that closes under them (a session that
            # ended closes its client): etcd did not answer this one.
            raise EtcdUnavailableError(
                f"etcd at {self.endpoint}: {what} failed (the connection was closed)"
            ) from exc

    async def open(self, timeout: float) -> None:
        """Connect and make one linearizable read within ``timeout`` seconds: the endpoint
        answers, with a quorum behind it."""
        await self._call("connect", self._client.connect(), timeout)
        await self._call("read", self._client.get(b"/rivalis-fleet/"), timeout)

    async def close(self) -> None:
        with contextlib.suppress(*_FAILURES):
            await self._client.close()

    async def grant(self, ttl_s: int) -> int:
        """A new lease of ``ttl_s`` seconds; its id."""
        lease = await self._call("lease grant", self._client.lease(ttl_s))
        return int(lease.id)

    def blocking_leases(self) -> BlockingLeases:
        """A blocking client of the same endpoint (and credentials) for lease keepalives
        sent from a thread of their own; the caller closes it."""
        return BlockingLeases(self.endpoint, lambda: self._client.metadata, self._timeout)

    async def revoke(self, lease: int) -> None:
        """Revoke ``lease`` and so delete its keys; a lease already gone is no error."""
        try:
            await self._call("lease revoke", self._client.revoke_lease(lease))
        except EtcdUnavailableError as exc:
            if _rpc_code(exc) != grpc.StatusCode.NOT_FOUND:
                raise

    async def get(self, key: str) -> KeyValue | None:
        found = await self._call("read", self._client.get(key.encode()))
        return None if found is None else _kv(found)

    async def get_range(self, start: str, end: str) -> tuple[list[KeyValue], int]:
        """Every key in ``[start, end)``, and the revision the read saw."""
        found = await self._call("read", self._client.get_range(start.encode(), end.encode()))
        return [_kv(kv) for kv in found.kvs], int(found.header.revision)

    async def put(self, key: str, value: bytes, lease: int = 0) -> None:
        await self._call("write", self._client.put(key.encode(), value, lease=lease))

    async def delete(self, key: str) -> None:
        await self._call("delete", self._client.delete(key.encode()))

    async def create(self, key: str, value: bytes, lease: int) -> int | None:
        """Put ``key`` only if it does not exist; its create revision, or None if it did."""
        tx = self._client.transactions
        raw = key.encode()
        created, responses = await self._call(
            "create",
            self._client.transaction(
                compare=[tx.create(raw) == 0],
                success=[tx.put(raw, value, lease=lease), tx.get(raw)],
                failure=[],
            ),
        )
        if not created:
            return None
        return int(responses[1][0][1].create_revision)

    async def put_if_created(
        self, guard: str, revision: int, key: str, value: bytes, lease: int = 0
    ) -> bool:
        """Put ``key`` only while ``guard`` exists with create revision ``revision``."""
        tx = self._client.transactions
        ok, _ = await self._call(
            "fenced write",
            self._client.transaction(
                compare=[tx.create(guard.encode()) == revision],
                success=[tx.put(key.encode(), value, lease=lease)],
                failure=[],
            ),
        )
        return bool(ok)

    async def watch(
        self, start: str, end: str, revision: int
    ) -> AsyncGenerator[list[Change], None]:
        """The changes of the keys in ``[start, end)`` from ``revision`` on, one list per
        etcd response; :class:`EtcdUnavailableError` when the stream fails or ends. Close
        it (``contextlib.aclosing``) to cancel the watch."""
        create = aetcd.rpc.WatchRequest(
            create_request=aetcd.rpc.WatchCreateRequest(
                key=start.encode(), range_end=end.encode(), start_revision=revision
            )
        )
        done = asyncio.Event()

        async def requests() -> AsyncIterator[Any]:
            yield create
            await done.wait()

        await self._call("connect", self._client.connect())
        call = aetcd.rpc.WatchStub(self._client.channel).Watch(
            requests(), metadata=self._client.metadata
        )
        try:
            responses = _responses(call, self.endpoint, self._timeout)
            async with contextlib.aclosing(responses):
                async for response in responses:
                    yield [_change(event) for event in response.events]
        finally:
            done.set()
            call.cancel()


class BlockingLeases:
    """Lease keepalives over a blocking gRPC channel of its own: a thread can renew a
    lease without waiting for the event loop. ``metadata`` gives the credentials of the
    event loop's client (its auth token) at each call."""

    def __init__(self, endpoint: Endpoint, metadata: Callable[[], Any], timeout: float) -> None:
        self.endpoint = endpoint
        self._metadata = metadata
        self._timeout = timeout
        host = f"[{endpoint.host}]" if ":" in endpoint.host else endpoint.host
        self._channel = grpc.insecure_channel(
            f"{host}:{endpoint.port}", options=list(_CHANNEL_OPTIONS.items())
        )
        self._stub = aetcd.rpc.LeaseStub(self._channel)

    def keepalive(self, lease: int) -> int:
        """Renew ``lease`` (blocking, bounded by the timeout); the TTL etcd now gives it,
        0 when the lease is gone; :class:`EtcdUnavailableError` when etcd does not answer."""
        request = aetcd.rpc.LeaseKeepAliveRequest(ID=lease)
        try:
            replies = self._stub.LeaseKeepAlive(
                iter([request]), timeout=self._timeout, metadata=self._metadata()
            )
            try:
                for reply in replies:
                    return int(reply.TTL)
                return 0
            finally:
                replies.cancel()
        except _FAILURES as exc:
            raise EtcdUnavailableError(
                f"etcd at {self.endpoint}: lease keepalive failed ({_describe(exc)})"
            ) from exc

    def close(self) -> None:
        self._channel.close()


async def _responses(
    call: Any, endpoint: Endpoint, first_within: float
) -> AsyncGenerator[Any, None]:
    """The responses of a watch stream, the first (``created``) within ``first_within``
    seconds; errors converted."""
    what = f"etcd at {endpoint}: watch"
    try:
        async with asyncio.timeout(first_within):
            first = await call.read()
        if first is grpc.aio.EOF or not first.created or first.canceled:
            raise EtcdUnavailableError(f"{what} was not created")
        while True:
            response = await call.read()
            if response is grpc.aio.EOF:
                raise EtcdUnavailableError(f"{what} ended")
            if response.canceled or response.compact_revision:
                raise EtcdUnavailableError(f"{what} was cancelled by etcd")
            yield response
    except _FAILURES as exc:
        raise EtcdUnavailableError(f"{what} failed ({_describe(exc)})") from exc


async def connect(
    endpoints: Sequence[Endpoint], *, timeout: float, open_timeout: float
) -> EtcdClient:
    """A client (calls bounded by ``timeout`` s) of the first endpoint that answers within
    ``open_timeout`` s, tried in order; :class:`EtcdUnavailableError` naming each and why
    when none does."""
    failures: list[str] = []
    for endpoint in endpoints:
        client = EtcdClient(endpoint, timeout=timeout)
        try:
            await client.open(open_timeout)
        except EtcdUnavailableError as exc:
            log.debug("%s", exc)
            failures.append(str(exc))
            await client.close()
            continue
        except BaseException:
            await client.close()
            raise
        return client
    raise EtcdUnavailableError("no etcd answered: " + "; ".join(failures))


def _kv(kv: Any) -> KeyValue:
    return KeyValue(
        key=bytes(kv.key).decode(errors="replace"),
        value=bytes(kv.value),
        create_revision=int(kv.create_revision),
        mod_revision=int(kv.mod_revision),
        lease=int(kv.lease),
    )


def _change(event: Any) -> Change:
    kind: Literal["put", "delete"] = "delete" if event.type == aetcd.rpc.Event.DELETE else "put"
    return Change(kind, _kv(event.kv))


def prefix_end(prefix: str) -> str:
    """The range end that covers every key starting with ``prefix`` (ASCII keys)."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


def _rpc_code(exc: BaseException) -> grpc.StatusCode | None:
    """The gRPC status behind ``exc``, if it came from an RPC."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, grpc.aio.AioRpcError):
            return seen.code()
        seen = seen.__cause__
    return None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    code = _rpc_code(exc)
    return type(exc).__name__ if code is None else code.name


def _redact(text: str) -> str:
    """``text`` without a user or password it may carry."""
    scheme, sep, rest = text.rpartition("://")
    return f"{scheme}{sep}{rest.rpartition('@')[2]}"
