"""One request to an upstream, through the pool, with fastgw's timeouts.

:func:`send` checks a connection out of the :class:`~fastgw.upstream.pool.Pool`,
writes the request through httpcore's HTTP/1.1 connection and returns an
:class:`UpstreamResponse` as soon as the status line and headers arrived. The
body is read with :meth:`UpstreamResponse.next_chunk`; :meth:`UpstreamResponse.aclose` must always be
called: it returns the connection to the pool when the body was read to its
end, and closes it otherwise.

Timeouts (each maps to :class:`UpstreamTimeout` with its ``kind``):

* ``connect``: opening the TCP/TLS connection;
* ``first_byte``: from the request sent to the response headers;
* ``idle``: between two body chunks (streams);
* ``total``: the whole exchange, headers and body.

Errors: :class:`UpstreamTimeout`, :class:`UpstreamUnreachable` (refused,
unreachable, TLS failure), :class:`UpstreamBroken` (the upstream broke the
protocol or the connection mid-response), :class:`~fastgw.upstream.pool.PoolTimeout`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable
from time import perf_counter

import httpcore
from h11._headers import Headers

from fastgw.upstream.pool import Connection, Pool


class UpstreamError(Exception):
    kind = "error"


class UpstreamTimeout(UpstreamError):
    def __init__(self, kind: str) -> None:
        super().__init__(f"the upstream timed out ({kind})")
        self.kind = kind


class UpstreamUnreachable(UpstreamError):
    kind = "unreachable"


class UpstreamBroken(UpstreamError):
    kind = "broken"


class RequestRefused(UpstreamError):
    """h11 refused to write the request (a header name or value HTTP does not allow): the
    client's fault, never sent."""

    kind = "request_refused"


class Timeouts:
    """Seconds; ``None`` means no limit."""

    __slots__ = ("connect", "first_byte", "idle", "total")

    def __init__(
        self,
        connect: float | None = 10.0,
        first_byte: float | None = 600.0,
        idle: float | None = 300.0,
        total: float | None = 1800.0,
    ) -> None:
        self.connect = connect
        self.first_byte = first_byte
        self.idle = idle
        self.total = total


class UpstreamResponse:
    """Status and headers of an upstream response; the body arrives by :meth:`next_chunk`."""

    __slots__ = ("_conn", "_pool", "complete", "headers", "status", "wait")

    def __init__(self, pool: Pool, conn: Connection, status: int, headers: list[tuple[bytes, bytes]],
                 idle: float | None) -> None:
        self._pool = pool
        self._conn: Connection | None = conn
        self.status = status
        self.headers = headers
        self.complete = False
        # Seconds spent waiting on the upstream: the exchange up to the headers, then each body read.
        self.wait = 0.0
        conn.stream.read_timeout = idle
        conn.stream.timeout_kind = "idle"

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None

    async def next_chunk(self) -> bytes | None:
        """The next body bytes as they arrive; None once the body is complete."""
        assert self._conn is not None
        t0 = perf_counter()
        try:
            chunk = await self._conn.http.next_chunk()
        except httpcore.TimeoutException as exc:
            raise UpstreamTimeout(str(exc) or "idle") from None
        except (httpcore.NetworkError, httpcore.ProtocolError) as exc:
            raise UpstreamBroken(f"the upstream connection broke mid-response: {exc}") from None
        finally:
            self.wait += perf_counter() - t0
        if chunk is None:
            self.complete = True
        return chunk

    async def read(self, limit: int | None = None) -> bytes:
        """Read the whole body (at most ``limit`` bytes; the rest is dropped)."""
        parts: list[bytes] = []
        size = 0
        while (chunk := await self.next_chunk()) is not None:
            if limit is not None and size + len(chunk) > limit:
                parts.append(chunk[: limit - size])
                break
            parts.append(chunk)
            size += len(chunk)
        return b"".join(parts)

    async def aclose(self) -> None:
        """Release the connection: back to the pool if the body was read to its end."""
        self.close()

    def close(self) -> None:
        conn = self._conn
        if conn is None:
            return
        self._conn = None
        conn.http.finish()
        self._pool.release(conn)


async def send(
    pool: Pool,
    method: bytes,
    target: bytes,
    headers: list[tuple[bytes, bytes]] | Headers,
    body: bytes | AsyncIterable[bytes],
    timeouts: Timeouts,
) -> UpstreamResponse:
    """Send one request and return once the response headers arrived.

    ``headers`` must include ``Host`` and body framing (``Content-Length`` or
    ``Transfer-Encoding``). A request that fails on a reused keep-alive
    connection before any response byte (the server closed it as we wrote) is
    retried once on a fresh connection; only when ``body`` is bytes.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeouts.total if timeouts.total is not None else None
    attempts = 2 if isinstance(body, bytes) else 1
    for attempt in range(attempts):
        try:
            conn = await pool.acquire()
        except httpcore.ConnectTimeout:
            raise UpstreamTimeout("connect") from None
        except httpcore.ConnectError as exc:
            raise UpstreamUnreachable(str(exc)) from None
        stream = conn.stream
        stream.read_timeout = timeouts.first_byte
        stream.timeout_kind = "first_byte"
        stream.deadline = deadline
        t0 = perf_counter()
        try:
            status, response_headers = await conn.http.start(method, target, headers, body)
        except httpcore.TimeoutException as exc:
            pool.release(conn)
            raise UpstreamTimeout(str(exc) or "first_byte") from None
        except httpcore.LocalProtocolError:
            pool.release(conn)
            # h11's message quotes the offending value, which may be a credential: not kept.
            raise RequestRefused("a request header name or value is not allowed in HTTP") from None
        except (httpcore.NetworkError, httpcore.ProtocolError) as exc:
            reused = conn.reused
            pool.release(conn)
            if reused and attempt + 1 < attempts:
                continue
            if isinstance(exc, httpcore.RemoteProtocolError | httpcore.ReadError):
                raise UpstreamBroken(f"the upstream closed the connection: {exc}") from None
            raise UpstreamUnreachable(f"the upstream is unreachable: {exc}") from None
        except BaseException:
            pool.release(conn)
            raise
        resp = UpstreamResponse(pool, conn, status, response_headers, timeouts.idle)
        resp.wait = perf_counter() - t0
        return resp
    raise AssertionError("unreachable")  # pragma: no cover
