"""An asyncio-native network backend for httpcore.

httpcore's default async backend goes through anyio; on the hot path that costs
CPU for every read and write. This module implements httpcore's
``AsyncNetworkBackend`` / ``AsyncNetworkStream`` interfaces directly on an
``asyncio.Protocol``: reads await a future fed by ``data_received``; writes go
straight to the transport and only wait when the transport asks for
back-pressure.

Timeouts. A stream carries its own read deadline policy, set by the upstream
client (see :mod:`fastgw.upstream.client`): ``read_timeout`` for the next reads
(first byte, then idle between chunks) and an absolute ``deadline`` (total
time). When set, they take precedence over the timeout httpcore passes in, so
one request can move from its first-byte timeout to its idle timeout without
httpcore knowing. ``timeout_kind`` names which limit fired.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import typing
from collections import deque

import certifi
import httpcore

_HIGH_WATER = 256 * 1024


def default_ssl_context() -> ssl.SSLContext:
    """TLS through the certifi CA bundle, HTTP/1.1 over ALPN."""
    ctx = ssl.create_default_context(cafile=certifi.where())
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def tls_context(ca_bundle: str | None = None, client_cert: str | None = None, client_key: str | None = None,
                verify: bool = True) -> ssl.SSLContext:
    """A provider's own TLS context: its CA bundle (instead of certifi's), its client
    certificate for mTLS, or -- for development only -- no verification at all."""
    ctx = ssl.create_default_context(cafile=ca_bundle or certifi.where())
    ctx.set_alpn_protocols(["http/1.1"])
    if client_cert is not None:
        ctx.load_cert_chain(client_cert, client_key)
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


class _Protocol(asyncio.Protocol):
    """Collects received bytes (as the objects the loop gave, no copying) and wakes the reader."""

    __slots__ = ("chunks", "closed", "drain_waiter", "eof", "error", "paused", "read_paused", "read_waiter",
                 "size", "transport")

    def __init__(self) -> None:
        self.chunks: deque[bytes] = deque()
        self.size = 0
        self.eof = False
        self.error: BaseException | None = None
        self.read_waiter: asyncio.Future[None] | None = None
        self.drain_waiter: asyncio.Future[None] | None = None
        self.paused = False
        self.read_paused = False
        self.closed = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = typing.cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.chunks.append(data)
        self.size += len(data)
        waiter = self.read_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if self.size > _HIGH_WATER and self.transport is not None and not self.read_paused:
            self.read_paused = True
            self.transport.pause_reading()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.eof = True
        if exc is not None:
            self.error = exc
        self._wake()
        drain = self.drain_waiter
        if drain is not None and not drain.done():
            drain.set_result(None)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        drain = self.drain_waiter
        if drain is not None and not drain.done():
            drain.set_result(None)

    def _wake(self) -> None:
        waiter = self.read_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


def _expire(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_exception(TimeoutError())


class AsyncioStream(httpcore.AsyncNetworkStream):
    """One TCP (or TLS) connection, read and written through an asyncio Protocol.

    Read timeouts cost no timer per read: each wait records its deadline, and a
    single timer per stream, armed for the earliest deadline it must watch,
    checks on firing whether the current wait is past its deadline (and re-arms
    for a later one otherwise).
    """

    __slots__ = ("_kind", "_loop", "_protocol", "_timer", "_timer_when", "_transport", "_wait_deadline",
                 "deadline", "read_timeout", "timeout_kind")

    def __init__(self, transport: asyncio.Transport, protocol: _Protocol) -> None:
        self._transport = transport
        self._protocol = protocol
        self._loop = asyncio.get_running_loop()
        self.read_timeout: float | None = None
        self.deadline: float | None = None
        self.timeout_kind = "read"
        self._timer: asyncio.TimerHandle | None = None
        self._timer_when = 0.0
        self._wait_deadline = 0.0
        self._kind = "read"

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        proto = self._protocol
        if not proto.size and not proto.eof:
            await self._wait_readable(timeout)
        chunks = proto.chunks
        if chunks:
            if len(chunks) == 1 and proto.size <= max_bytes:
                data = chunks.popleft()
            else:
                parts = []
                size = 0
                while chunks and size + len(chunks[0]) <= max_bytes:
                    part = chunks.popleft()
                    parts.append(part)
                    size += len(part)
                if not parts:  # one chunk larger than max_bytes: split it
                    head = chunks[0]
                    parts.append(head[:max_bytes])
                    chunks[0] = head[max_bytes:]
                data = b"".join(parts)
            proto.size -= len(data)
            if proto.read_paused and proto.size < _HIGH_WATER and not proto.closed and proto.transport is not None:
                proto.read_paused = False
                proto.transport.resume_reading()
            return data
        if proto.error is not None:
            raise httpcore.ReadError(str(proto.error) or type(proto.error).__name__)
        return b""

    async def _wait_readable(self, timeout: float | None) -> None:
        proto = self._protocol
        loop = self._loop
        limit = self.read_timeout if self.read_timeout is not None else timeout
        kind = self.timeout_kind
        if self.deadline is not None:
            remaining = self.deadline - loop.time()
            if limit is None or remaining < limit:
                limit = remaining
                kind = "total"
            if limit <= 0:
                raise httpcore.ReadTimeout(kind)
        fut: asyncio.Future[None] = loop.create_future()
        proto.read_waiter = fut
        if limit is not None:
            deadline = loop.time() + limit
            self._wait_deadline = deadline
            self._kind = kind
            if self._timer is None or self._timer_when > deadline:
                if self._timer is not None:
                    self._timer.cancel()
                self._timer = loop.call_at(deadline, self._on_timer)
                self._timer_when = deadline
        else:
            self._wait_deadline = 0.0
        try:
            await fut
        except TimeoutError:
            raise httpcore.ReadTimeout(kind) from None
        finally:
            proto.read_waiter = None

    def _on_timer(self) -> None:
        self._timer = None
        waiter = self._protocol.read_waiter
        deadline = self._wait_deadline
        if waiter is None or waiter.done() or not deadline:
            return  # not waiting (or without a limit): the next wait arms a timer again
        if self._loop.time() >= deadline - 0.001:
            waiter.set_exception(TimeoutError())
        else:
            self._timer = self._loop.call_at(deadline, self._on_timer)
            self._timer_when = deadline

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        proto = self._protocol
        if proto.closed:
            raise httpcore.WriteError("connection closed")
        self._transport.write(buffer)
        if proto.paused:
            fut: asyncio.Future[None] = self._loop.create_future()
            proto.drain_waiter = fut
            handle = self._loop.call_later(timeout, _expire, fut) if timeout is not None else None
            try:
                await fut
            except TimeoutError:
                raise httpcore.WriteTimeout("write") from None
            finally:
                proto.drain_waiter = None
                if handle is not None:
                    handle.cancel()

    async def aclose(self) -> None:
        self.close()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._transport.is_closing():
            self._transport.close()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        async with asyncio.timeout(timeout):
            transport = await self._loop.start_tls(
                self._transport, self._protocol, ssl_context, server_hostname=server_hostname
            )
        assert transport is not None
        self._protocol.transport = transport
        return AsyncioStream(transport, self._protocol)

    def get_extra_info(self, info: str) -> typing.Any:
        if info == "is_readable":
            # An idle keep-alive connection that became readable was closed by the server.
            return bool(self._protocol.size) or self._protocol.eof
        if info == "ssl_object":
            return self._transport.get_extra_info("ssl_object")
        if info == "client_addr":
            return self._transport.get_extra_info("sockname")
        if info == "server_addr":
            return self._transport.get_extra_info("peername")
        if info == "socket":
            return self._transport.get_extra_info("socket")
        return None

    @property
    def is_closed(self) -> bool:
        return self._protocol.closed


class AsyncioBackend(httpcore.AsyncNetworkBackend):
    """Opens :class:`AsyncioStream` connections: TCP_NODELAY, optional TLS at connect."""

    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        self._ssl_context = ssl_context

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
        *,
        tls: bool = False,
        ssl_context: ssl.SSLContext | None = None,
    ) -> AsyncioStream:
        """``ssl_context`` (a provider's own) overrides the backend's default one."""
        loop = asyncio.get_running_loop()
        ssl_ctx: ssl.SSLContext | None = None
        if tls:
            if ssl_context is None and self._ssl_context is None:
                self._ssl_context = default_ssl_context()
            ssl_ctx = ssl_context or self._ssl_context
        try:
            async with asyncio.timeout(timeout):
                transport, protocol = await loop.create_connection(
                    _Protocol,
                    host,
                    port,
                    ssl=ssl_ctx,
                    server_hostname=host if ssl_ctx is not None else None,
                    local_addr=(local_address, 0) if local_address else None,
                )
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"connect to {host}:{port} timed out") from None
        except ssl.SSLError as exc:
            raise httpcore.ConnectError(f"TLS handshake with {host}:{port} failed: {exc.reason}") from None
        except OSError as exc:
            raise httpcore.ConnectError(f"connect to {host}:{port} failed: {exc.strerror or exc}") from None
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for option in socket_options or ():
                sock.setsockopt(*option)
        return AsyncioStream(typing.cast(asyncio.Transport, transport), protocol)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> AsyncioStream:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                transport, protocol = await loop.create_unix_connection(_Protocol, path)
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"connect to {path} timed out") from None
        except OSError as exc:
            raise httpcore.ConnectError(f"connect to {path} failed: {exc.strerror or exc}") from None
        return AsyncioStream(typing.cast(asyncio.Transport, transport), protocol)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
