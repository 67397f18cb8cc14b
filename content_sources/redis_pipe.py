"""One pipelining connection to the store for the opens' reads.

The Redis protocol answers a connection's commands in the order they were sent, so a
batch needs no connection of its own: a batch is written the moment it is complete and
joins the connection's queue; replies, parsed by hiredis as the bytes arrive, fill the
oldest batch, and a full batch is delivered from that same callback. No task, no pool
checkout and no reading coroutine per batch, and the opens waiting for the replies
resume in the next turn of the event loop.

Only reads go through here: a batch the connection lost before all its replies came is
sent once more on a new connection, which a write (a counter, say) must never be. A
batch whose deadline passes is told so at once; its replies, when they come, are
dropped. A connection that answers nothing for the client's socket timeout is closed,
and the next batch opens another.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Protocol, cast

import hiredis
from redis.asyncio.connection import AbstractConnection, SSLConnection
from redis.exceptions import ConnectionError as StoreConnectionError
from redis.exceptions import ResponseError

from content_sources.source import RedisCommand

# A batch's replies in order (an error reply as its ResponseError), or why there are none.
Deliver = Callable[[list[object] | BaseException], None]
SEND_ATTEMPTS = 2


# Argument types hiredis packs exactly as `pack` does (exact types: a bool is not an int
# to the store, and a subclass may write itself otherwise).
_PLAIN_TYPES = frozenset({str, bytes, int})
# (Its stub takes a one-item tuple; it takes any length.)
_hiredis_pack = cast(Callable[[RedisCommand], bytes], hiredis.pack_command)


def pack(commands: Sequence[RedisCommand]) -> bytes:
    """`commands` in the Redis protocol (RESP arrays of bulk strings).

    A command of plain arguments (str, bytes, int) is packed by hiredis, in C: the open
    log's commands carry an argument per reader. Any other is packed by `pack_command`,
    to the same bytes, refusing what the store cannot take."""
    plain = _PLAIN_TYPES.issuperset
    return b"".join(
        _hiredis_pack(command)
        if type(command) is tuple and plain(map(type, command))
        else pack_command(command)
        for command in commands
    )


def pack_command(command: RedisCommand) -> bytes:
    """One command in the Redis protocol, packed in Python."""
    out = [b"*%d\r\n" % len(command)]
    for arg in command:
        if isinstance(arg, str):
            data = arg.encode()
        elif isinstance(arg, bytes):
            data = arg
        elif isinstance(arg, int | float) and not isinstance(arg, bool):
            data = repr(arg).encode()
        else:
            raise TypeError(f"cannot send {type(arg).__name__} to the store: {arg!r}")
        out.append(b"$%d\r\n%b\r\n" % (len(data), data))
    return b"".join(out)


class _Batch:
    __slots__ = ("attempts", "count", "deliver", "payload", "replies", "sent_at", "timer")

    def __init__(self, payload: bytes, count: int, deliver: Deliver, attempts: int = 0) -> None:
        self.payload = payload
        self.count = count
        self.deliver: Deliver | None = deliver
        self.replies: list[object] = []
        self.attempts = attempts  # sends so far
        self.sent_at = 0.0
        self.timer: asyncio.TimerHandle | None = None

    def settle(self, outcome: list[object] | BaseException) -> None:
        """Deliver once: the replies, or the error that ended the wait for them."""
        deliver, self.deliver = self.deliver, None
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if deliver is not None:
            deliver(outcome)


class _Link(asyncio.Protocol):
    """One connection: its batches in the order written, and the parser of its replies."""

    transport: asyncio.Transport  # set as the connection is made, before any write

    def __init__(self, pipe: StorePipe) -> None:
        self._pipe = pipe
        self._parser = hiredis.Reader(replyError=ResponseError)
        self.in_flight: deque[_Batch] = deque()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def write(self, batch: _Batch) -> None:
        batch.replies = []
        batch.attempts += 1
        batch.sent_at = time.monotonic()
        self.in_flight.append(batch)
        self.transport.write(batch.payload)

    def data_received(self, data: bytes) -> None:
        self._parser.feed(data)
        in_flight = self.in_flight
        while (reply := self._parser.gets()) is not False:
            if not in_flight:  # a reply to nothing sent: this connection cannot be trusted
                self.close()
                return
            batch = in_flight[0]
            batch.replies.append(reply)
            if len(batch.replies) == batch.count:
                in_flight.popleft()
                batch.settle(batch.replies)

    def connection_lost(self, exc: Exception | None) -> None:
        self._pipe._lost(self, exc)

    def close(self) -> None:
        self.transport.abort()


class Endpoint(Protocol):
    """Where a pipe connects, and how: a client's connection pool, or a cluster node."""

    connection_kwargs: dict[str, Any]

    @property
    def connection_class(self) -> type[AbstractConnection]: ...


class StorePipe:
    """Sends batches of read commands on one connection to `endpoint` (a client's pool:
    its URL's host or socket, credentials, database and TLS; or one cluster node),
    opened when first needed."""

    def __init__(self, endpoint: Endpoint) -> None:
        self._endpoint = endpoint
        kwargs = endpoint.connection_kwargs
        self._timeout_s: float | None = kwargs.get("socket_timeout")
        self._link: _Link | None = None
        self._unsent: list[_Batch] = []
        self._connecting: asyncio.Task[Exception | None] | None = None
        self._closed = False

    def send(
        self, commands: Sequence[RedisCommand], deliver: Deliver, deadline: float | None
    ) -> None:
        """Send `commands` (reads only) now; `deliver` gets their replies, or the error that
        ended the wait, once. `deadline` is a `time.monotonic()` instant: TimeoutError then."""
        batch = _Batch(pack(commands), len(commands), deliver)
        if self._closed:
            batch.settle(StoreConnectionError("the store connection is closed"))
            return
        loop = asyncio.get_running_loop()
        if deadline is not None:
            batch.timer = loop.call_later(deadline - time.monotonic(), self._expired, batch)
        elif self._timeout_s is not None:
            batch.timer = loop.call_later(self._timeout_s, self._expired, batch)
        self._send(batch)

    async def connect(self) -> None:
        """Open the connection now rather than at the first batch (which would wait for
        it); StoreConnectionError if the store cannot be reached."""
        if self._link is not None:
            return
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._connect())
        failure = await asyncio.shield(self._connecting)
        if failure is not None:
            raise failure

    def _send(self, batch: _Batch) -> None:
        if self._link is not None:
            self._link.write(batch)
            return
        self._unsent.append(batch)
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._connect())

    async def _connect(self) -> Exception | None:
        """Connect, then send what waited for it; the error the waiting batches got, if
        the store could not be reached."""
        try:
            link = await self._open()
        except BaseException as exc:
            unsent, self._unsent = self._unsent, []
            failure = _as_store_error(exc) if isinstance(exc, Exception) else None
            for batch in unsent:
                batch.settle(failure or StoreConnectionError("the store connection is closed"))
            if failure is None:
                raise
            return failure
        finally:
            self._connecting = None
        if self._closed:
            link.close()
            return StoreConnectionError("the store connection is closed")
        self._link = link
        unsent, self._unsent = self._unsent, []
        for batch in unsent:
            if batch.deliver is not None:  # not given up while connecting
                link.write(batch)
        return None

    async def _open(self) -> _Link:
        """A new connection, past its handshake (credentials, then the database)."""
        kwargs = self._endpoint.connection_kwargs
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(kwargs.get("socket_connect_timeout")):
            if "path" in kwargs:
                _, link = await loop.create_unix_connection(lambda: _Link(self), kwargs["path"])
            else:
                ssl_context = None
                connection_class = self._endpoint.connection_class
                if issubclass(connection_class, SSLConnection):
                    ssl_context = connection_class(**kwargs).ssl_context.get()
                _, link = await loop.create_connection(
                    lambda: _Link(self),
                    kwargs.get("host", "localhost"),
                    kwargs.get("port", 6379),
                    ssl=ssl_context,
                )
            handshake: list[RedisCommand] = []
            password, username = kwargs.get("password"), kwargs.get("username")
            if password:
                handshake.append(("AUTH", username, password) if username else ("AUTH", password))
            if kwargs.get("db"):
                handshake.append(("SELECT", int(kwargs["db"])))
            if handshake:
                done: asyncio.Future[list[object] | BaseException] = loop.create_future()

                def answered(outcome: list[object] | BaseException) -> None:
                    if not done.done():
                        done.set_result(outcome)

                # Never sent again: a lost handshake fails the connection, not a batch.
                link.write(_Batch(pack(handshake), len(handshake), answered, SEND_ATTEMPTS))
                try:
                    outcome = await done
                except BaseException:
                    link.close()
                    raise
                if not isinstance(outcome, BaseException):
                    outcome = next((r for r in outcome if isinstance(r, Exception)), outcome)
                if isinstance(outcome, BaseException):
                    link.close()
                    raise outcome
        return link

    def _expired(self, batch: _Batch) -> None:
        """A batch's deadline (or, with none, the socket timeout) has passed."""
        batch.timer = None
        batch.settle(TimeoutError("the store did not answer in time"))
        link = self._link
        if link is None or self._timeout_s is None or batch not in link.in_flight:
            return
        stuck_for = time.monotonic() - batch.sent_at
        if stuck_for >= self._timeout_s:
            link.close()  # the store answers nothing on it: the next batch opens another
        else:
            asyncio.get_running_loop().call_later(self._timeout_s - stuck_for, self._expired, batch)

    def _lost(self, link: _Link, exc: Exception | None) -> None:
        if self._link is link:
            self._link = None
        error = StoreConnectionError(f"the store connection was lost: {exc or 'closed'}")
        for batch in link.in_flight:
            if batch.deliver is None:
                continue
            if batch.attempts < SEND_ATTEMPTS and not self._closed:
                self._send(batch)
            else:
                batch.settle(error)
        link.in_flight.clear()

    def close(self) -> None:
        """Close the connection; every batch still waiting gets a ConnectionError."""
        self._closed = True
        if self._link is not None:
            self._link.close()
        if self._connecting is not None:
            self._connecting.cancel()


def _as_store_error(exc: Exception) -> Exception:
    """What the pool raised for the same failures: the store's errors as they are, a
    socket's as the store's ConnectionError."""
    if isinstance(exc, OSError):
        return StoreConnectionError(f"cannot reach the store: {exc}")
    return exc
