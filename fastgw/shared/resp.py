"""A pipelined Redis connection for commands issued on every request.

:class:`PipelinedRedis` keeps one connection per worker and lets any number of commands be
in flight on it at once. Redis answers in the order it was asked, so each reply goes to the
oldest waiter (a FIFO of futures); commands issued during one event-loop iteration leave in
one write; replies are parsed by ``hiredis`` (C). A command costs a few microseconds of this
worker's CPU, against a connection checkout, a retry wrapper and a Python parser per command
with ``redis.asyncio``, which stays the client for everything that is not per request.

Contract:

- :meth:`PipelinedRedis.execute` returns the reply (``int``, ``bytes``, ``list``, ``None``) or
  raises :class:`RespError` for an error reply and :class:`RedisUnavailable` when Redis cannot
  answer: not reachable, connection lost, or no reply within ``timeout`` seconds.
- No timer per command: while anything is pending a watchdog checks the oldest command every
  ``timeout / 4`` seconds and aborts the connection when it is older than ``timeout``; every
  waiter then fails with :class:`RedisUnavailable` and the next command reconnects.
- At most ``max_pending`` commands wait at once; past that :meth:`execute` fails at once.
- :meth:`PipelinedRedis.send` is fire-and-forget (its reply is read and dropped); it returns
  False, sending nothing, when there is no live connection. It leaves with the next command
  that is waited for, or within a few milliseconds, so settling many requests costs few writes;
  a later command on the same connection is always executed after it.
- :meth:`PipelinedRedis.submit` queues a command already packed (a caller that issues the same
  command shape on every request packs its constant part once) and returns the reply's future
  without a coroutine; None when there is no live connection (then :meth:`execute_packed`).
- :meth:`PipelinedRedis.execute_packed` returns a packed command's reply (``fut``: its future,
  when already submitted), connecting when needed; when the command runs a :class:`Script` by
  its SHA and Redis does not have it (a restart or ``SCRIPT FLUSH``), it loads the script and
  sends the command once more. :meth:`PipelinedRedis.evalsha` packs an ``EVALSHA`` for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ssl
from collections import deque
from collections.abc import Sequence
from typing import Any

import hiredis

Arg = bytes | str | int | float
LAZY_FLUSH = 0.005


class RedisUnavailable(Exception):
    """Redis did not answer (or the breaker is open after a recent failure)."""


class RespError(Exception):
    """An error reply from Redis (``NOSCRIPT``, ``WRONGTYPE``, ``NOAUTH`` ...)."""


def bulk(a: Arg) -> bytes:
    """One argument as a RESP bulk string."""
    if not isinstance(a, bytes):
        a = b"%d" % a if isinstance(a, int) else str(a).encode()
    return b"$%d\r\n%s\r\n" % (len(a), a)


def pack(args: Sequence[Arg]) -> bytes:
    """One command in RESP: an array of bulk strings."""
    return b"*%d\r\n" % len(args) + b"".join([bulk(a) for a in args])


class Script:
    """A Lua script called by its SHA1."""

    __slots__ = ("sha", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()


class _Connection(asyncio.Protocol):
    """One socket: writes batched per loop iteration, replies matched to waiters in order."""

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float) -> None:
        self.loop = loop
        self.timeout = timeout
        self.transport: asyncio.Transport | None = None
        self.reader = hiredis.Reader(replyError=RespError)
        # (future or None for a fire-and-forget command, loop time it was issued)
        self.pending: deque[tuple[asyncio.Future[Any] | None, float]] = deque()
        self.out: list[bytes] = []
        self.flush_scheduled = 0  # 0: none, 1: this iteration, 2: lazy (fire-and-forget only)
        self.lazy: asyncio.TimerHandle | None = None  # the lazy flush's timer
        self.watchdog: asyncio.TimerHandle | None = None
        self.closed = False
        self.error: BaseException | None = None

    # -- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not an asyncio.Transport subclass

    def data_received(self, data: bytes) -> None:
        reader = self.reader
        pending = self.pending
        try:
            reader.feed(data)
            while (reply := reader.gets()) is not False:
                if not pending:
                    raise RedisUnavailable("a reply nobody asked for")
                fut = pending.popleft()[0]
                if fut is None or fut.done():
                    continue
                if isinstance(reply, RespError):
                    fut.set_exception(reply)
                else:
                    fut.set_result(reply)
        except Exception as exc:  # a protocol error: this connection cannot be trusted any more
            self.abort(exc)

    def connection_lost(self, exc: BaseException | None) -> None:
        self.closed = True
        self._fail_all(exc or ConnectionResetError("redis closed the connection"))

    # -- commands -----------------------------------------------------------------------

    def push(self, payload: bytes, fut: asyncio.Future[Any] | None) -> None:
        """Queue a command: a waited-for one leaves at the end of this loop iteration; a
        fire-and-forget one with the next waited-for command or within ``LAZY_FLUSH`` seconds
        (the order on the connection stays the order of the calls either way)."""
        self.out.append(payload)
        self.pending.append((fut, self.loop.time()))
        if fut is not None:
            if self.flush_scheduled != 1:
                if self.lazy is not None:  # what it would send leaves now
                    self.lazy.cancel()
                    self.lazy = None
                self.flush_scheduled = 1
                self.loop.call_soon(self._flush)
        elif not self.flush_scheduled:
            self.flush_scheduled = 2
            self.lazy = self.loop.call_later(LAZY_FLUSH, self._flush)
        if self.watchdog is None:
            self.watchdog = self.loop.call_later(self.timeout / 4, self._watch)

    def command(self, args: Sequence[Arg]) -> asyncio.Future[Any]:
        """Queue a command and return the future its reply will resolve."""
        fut = self.loop.create_future()
        self.push(pack(args), fut)
        return fut

    def _flush(self) -> None:
        self.flush_scheduled = 0
        self.lazy = None
        out = self.out
        if out and self.transport is not None and not self.closed:
            self.out = []
            self.transport.write(out[0] if len(out) == 1 else b"".join(out))

    def _watch(self) -> None:
        self.watchdog = None
        if not self.pending or self.closed:
            return
        if self.loop.time() - self.pending[0][1] > self.timeout:
            self.abort(TimeoutError(f"no reply from redis within {self.timeout}s"))
            return
        self.watchdog = self.loop.call_later(self.timeout / 4, self._watch)

    def abort(self, exc: BaseException) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()
        self._fail_all(exc)

    def _fail_all(self, exc: BaseException) -> None:
        if self.error is None:
            self.error = exc
        if self.watchdog is not None:
            self.watchdog.cancel()
            self.watchdog = None
        pending = self.pending
        while pending:
            fut = pending.popleft()[0]
            if fut is not None and not fut.done():
                fut.set_exception(RedisUnavailable(f"{type(exc).__name__}: {exc}"))


class PipelinedRedis:
    """Commands for ``url`` (``redis://``, ``rediss://`` or ``unix://``) on one pipelined connection."""

    def __init__(self, url: str, timeout: float, max_pending: int = 10_000) -> None:
        from redis.asyncio.connection import parse_url  # the URL grammar redis-py documents

        opts = parse_url(url)
        self.host: str = opts.get("host", "localhost")
        self.port: int = int(opts.get("port", 6379))
        self.path: str | None = opts.get("path")
        self.db = int(opts.get("db", 0) or 0)
        self.username: str | None = opts.get("username")
        self.password: str | None = opts.get("password")
        self.tls = url.startswith("rediss://")
        self.timeout = timeout
        self.max_pending = max_pending
        self._conn: _Connection | None = None
        self._connecting: asyncio.Future[_Connection] | None = None

    async def execute(self, *args: Arg) -> Any:
        conn = self._conn
        if conn is None or conn.closed:
            conn = await self._connection()
        if len(conn.pending) >= self.max_pending:
            raise RedisUnavailable(f"{self.max_pending} redis commands already waiting")
        return await conn.command(args)

    def submit(self, payload: bytes) -> asyncio.Future[Any] | None:
        conn = self._conn
        if conn is None or conn.closed:
            return None
        if len(conn.pending) >= self.max_pending:
            raise RedisUnavailable(f"{self.max_pending} redis commands already waiting")
        fut = conn.loop.create_future()
        conn.push(payload, fut)
        return fut

    async def execute_packed(self, payload: bytes, script: Script | None = None,
                             fut: asyncio.Future[Any] | None = None) -> Any:
        try:
            return await (fut if fut is not None else self._submitted(payload))
        except RespError as exc:
            if script is None or not str(exc).startswith("NOSCRIPT"):
                raise
        await self.execute("SCRIPT", "LOAD", script.source)
        return await self._submitted(payload)

    async def _submitted(self, payload: bytes) -> Any:
        fut = self.submit(payload)
        if fut is None:
            await self._connection()
            fut = self.submit(payload)
            if fut is None:
                raise RedisUnavailable("redis connection lost")
        return await fut

    def send(self, *args: Arg) -> bool:
        return self.send_packed(pack(args))

    def send_packed(self, payload: bytes) -> bool:
        conn = self._conn
        if conn is None or conn.closed or len(conn.pending) >= self.max_pending:
            return False
        conn.push(payload, None)
        return True

    async def evalsha(self, script: Script, keys: Sequence[Arg], args: Sequence[Arg]) -> Any:
        return await self.execute_packed(pack(("EVALSHA", script.sha, len(keys), *keys, *args)), script)

    async def _connection(self) -> _Connection:
        """The live connection, opening one (a single attempt shared by every caller) if needed."""
        if self._connecting is None:
            loop = asyncio.get_running_loop()
            self._connecting = loop.create_future()
            try:
                conn = await asyncio.wait_for(self._open(loop), self.timeout)
            except BaseException as exc:
                err = RedisUnavailable(f"cannot connect to redis: {type(exc).__name__}: {exc}")
                self._connecting.set_exception(err)
                self._connecting.exception()  # retrieved: no "never retrieved" warning
                self._connecting = None
                if isinstance(exc, asyncio.CancelledError):
                    raise
                raise err from None
            self._conn = conn
            self._connecting.set_result(conn)
            self._connecting = None
            return conn
        return await asyncio.shield(self._connecting)

    async def _open(self, loop: asyncio.AbstractEventLoop) -> _Connection:
        conn = _Connection(loop, self.timeout)
        if self.path:
            await loop.create_unix_connection(lambda: conn, self.path)
        else:
            ctx = ssl.create_default_context() if self.tls else None
            await loop.create_connection(lambda: conn, self.host, self.port, ssl=ctx)
        try:
            waits = []
            if self.password is not None:
                auth = ("AUTH", self.username, self.password) if self.username else ("AUTH", self.password)
                waits.append(conn.command(auth))
            if self.db:
                waits.append(conn.command(("SELECT", self.db)))
            for w in waits:
                await w
        except BaseException:
            conn.abort(ConnectionAbortedError("redis handshake failed"))
            raise
        return conn

    async def close(self) -> None:
        """Let what was sent be answered (bounded by the timeout), then close."""
        conn, self._conn = self._conn, None
        if conn is None or conn.closed:
            return
        if conn.pending:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.command(("PING",)), self.timeout)
        conn.closed = True
        if conn.transport is not None:
            conn.transport.close()
