"""A per-origin connection pool with O(1) checkout and return.

``httpcore.AsyncConnectionPool`` scans every connection on every request and
serialises on one lock, so its cost grows with the number of connections.
This pool keeps, per origin:

* ``idle``: a deque of :class:`Connection` ready for a request (LIFO: the most
  recently used connection is the warmest);
* ``size``: how many connections exist (idle + checked out + being opened),
  never above ``max_connections``;
* ``waiters``: a FIFO of requests waiting for a connection, each waiting at most
  ``pool_timeout`` seconds before it gets :class:`PoolTimeout` (the gateway
  answers 503 rather than queueing forever).

A connection returned in any state but idle (its response was not read to the
end, the server closed it, an error) is closed, never reused; its slot goes to
the next waiter.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque

import httpcore

from fastgw.upstream.backend import AsyncioBackend, AsyncioStream
from fastgw.upstream.connection import HTTP11Connection


class PoolTimeout(Exception):
    """No connection became free within the pool timeout."""


class Connection:
    """One upstream connection: httpcore's HTTP/1.1 connection over our asyncio stream."""

    __slots__ = ("http", "reused", "stream")

    def __init__(self, http: HTTP11Connection, stream: AsyncioStream) -> None:
        self.http = http
        self.stream = stream
        self.reused = False


class Pool:
    """Connections to one origin (scheme, host, port)."""

    def __init__(
        self,
        origin: httpcore.Origin,
        *,
        backend: AsyncioBackend,
        max_connections: int = 256,
        pool_timeout: float = 10.0,
        connect_timeout: float = 10.0,
        keepalive_expiry: float = 60.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.origin = origin
        self.ssl_context = ssl_context  # None: the backend's default (certifi)
        self.host = origin.host.decode("ascii")
        self.port = origin.port
        self.tls = origin.scheme == b"https"
        self.backend = backend
        self.max_connections = max_connections
        self.pool_timeout = pool_timeout
        self.connect_timeout = connect_timeout
        self.keepalive_expiry = keepalive_expiry
        self.idle: deque[Connection] = deque()
        self.waiters: deque[asyncio.Future[Connection | None]] = deque()
        self.size = 0
        self.closed = False

    @property
    def in_use(self) -> int:
        """Connections checked out or being opened."""
        return self.size - len(self.idle)

    async def acquire(self) -> Connection:
        """Check out an idle connection, open a new one, or wait for one (bounded)."""
        idle = self.idle
        while idle:
            conn = idle.pop()
            if conn.http.has_expired() or not conn.http.is_available():
                await self._discard(conn)
                continue
            conn.reused = True
            return conn
        if self.closed:
            raise PoolTimeout("the connection pool is closed")
        if self.size < self.max_connections:
            self.size += 1
            return await self._open()
        fut: asyncio.Future[Connection | None] = asyncio.get_running_loop().create_future()
        self.waiters.append(fut)
        try:
            async with asyncio.timeout(self.pool_timeout):
                conn = await fut
        except TimeoutError:
            if not (fut.done() and not fut.cancelled()):
                raise PoolTimeout(
                    f"all {self.max_connections} connections to the upstream are busy"
                ) from None
            # A connection (or a slot) was handed to us just as the wait timed out: it is
            # ours -- dropping it here would leak its slot for good.
            conn = fut.result()
        except BaseException:
            if fut.done() and not fut.cancelled():
                # A connection (or a slot) was handed to us as we were cancelled: pass it on.
                handed = fut.result()
                if handed is None:
                    self._free_slot()
                else:
                    self.release(handed)
            raise
        finally:
            if not fut.done():
                fut.cancel()
        if conn is None:
            # A slot freed up: open a connection in it (size already counts it).
            return await self._open()
        conn.reused = True
        return conn

    async def _open(self) -> Connection:
        try:
            stream = await self.backend.connect_tcp(
                self.host, self.port, timeout=self.connect_timeout, tls=self.tls, ssl_context=self.ssl_context
            )
        except BaseException:
            self._free_slot()
            raise
        http = HTTP11Connection(self.origin, stream, keepalive_expiry=self.keepalive_expiry)
        return Connection(http, stream)

    def release(self, conn: Connection) -> None:
        """Return a connection after its response was closed. O(1)."""
        stream = conn.stream
        stream.read_timeout = None
        stream.deadline = None
        if self.closed or not conn.http.is_available() or stream.is_closed:
            if not conn.http.is_closed():
                stream.close()
            self._free_slot()
            return
        waiters = self.waiters
        while waiters:
            fut = waiters.popleft()
            if not fut.done():
                fut.set_result(conn)
                return
        self.idle.append(conn)

    def _free_slot(self) -> None:
        """A connection went away: give its slot to the next waiter, or shrink."""
        waiters = self.waiters
        while waiters:
            fut = waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return
        self.size -= 1

    async def _discard(self, conn: Connection) -> None:
        conn.http.finish()
        self._free_slot()

    async def aclose(self) -> None:
        """Close every idle connection; checked-out ones close on release."""
        self.closed = True
        while self.idle:
            await self._discard(self.idle.pop())
        while self.waiters:
            fut = self.waiters.popleft()
            if not fut.done():
                fut.set_exception(PoolTimeout("the connection pool is closed"))
