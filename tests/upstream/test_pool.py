"""The upstream pool and client against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import asyncio

import httpcore
import pytest
from upstream_server import Reply, json_reply, sse_reply

from fastgw.upstream.backend import AsyncioBackend
from fastgw.upstream.client import Timeouts, UpstreamBroken, UpstreamTimeout, UpstreamUnreachable, send
from fastgw.upstream.pool import Pool, PoolTimeout


def make_pool(port: int, **kw: object) -> Pool:
    return Pool(httpcore.Origin(b"http", b"127.0.0.1", port), backend=AsyncioBackend(), **kw)  # type: ignore[arg-type]


def headers(body: bytes) -> list[tuple[bytes, bytes]]:
    return [(b"host", b"127.0.0.1"), (b"content-length", str(len(body)).encode())]


async def get(pool: Pool, body: bytes = b"{}", timeouts: Timeouts | None = None) -> bytes:
    resp = await send(pool, b"POST", b"/v1/x", headers(body), body, timeouts or Timeouts())
    try:
        return await resp.read()
    finally:
        await resp.aclose()


def test_connections_are_reused_and_bounded(upstream):
    upstream.handler = lambda r: Reply(chunks=[b"ok"], content_length=True, delay_before_headers=0.05)

    async def run() -> None:
        pool = make_pool(upstream.port, max_connections=4)
        accepted = upstream.connections_accepted
        results = await asyncio.gather(*(get(pool) for _ in range(20)))
        assert results == [b"ok"] * 20
        assert pool.size == 4 and len(pool.idle) == 4 and pool.in_use == 0
        assert upstream.connections_accepted - accepted == 4
        await pool.aclose()

    asyncio.run(run())


def test_bounded_wait_gives_pool_timeout(upstream):
    upstream.handler = lambda r: Reply(chunks=[b"ok"], content_length=True, delay_before_headers=0.5)

    async def run() -> None:
        pool = make_pool(upstream.port, max_connections=1, pool_timeout=0.1)
        first = asyncio.ensure_future(get(pool))
        await asyncio.sleep(0.05)
        with pytest.raises(PoolTimeout):
            await get(pool)
        assert await first == b"ok"
        assert pool.waiters == type(pool.waiters)() or all(f.done() for f in pool.waiters)
        await pool.aclose()

    asyncio.run(run())


def test_partly_read_response_closes_the_connection(upstream):
    upstream.handler = lambda r: sse_reply([b"data: 1\n\n", b"data: 2\n\n"], interval=0.05)

    async def run() -> None:
        pool = make_pool(upstream.port)
        resp = await send(pool, b"POST", b"/", headers(b"{}"), b"{}", Timeouts())
        assert await resp.next_chunk() == b"data: 1\n\n"
        await resp.aclose()
        assert pool.size == 0 and not pool.idle
        # The whole body read: the connection goes back idle.
        assert await get(pool) == b"data: 1\n\ndata: 2\n\n"
        assert pool.size == 1 and len(pool.idle) == 1
        await pool.aclose()

    asyncio.run(run())


def test_server_closing_idle_connection_is_retried(upstream):
    upstream.handler = lambda r: Reply(headers=[("connection", "close")], chunks=[b"bye"], content_length=True)

    async def run() -> None:
        pool = make_pool(upstream.port)
        for _ in range(3):
            assert await get(pool) == b"bye"
        await pool.aclose()

    asyncio.run(run())


def test_timeouts_and_failures(upstream):
    async def run() -> None:
        pool = make_pool(upstream.port)
        upstream.handler = lambda r: Reply(delay_before_headers=0.5, chunks=[b"x"], content_length=True)
        with pytest.raises(UpstreamTimeout) as info:
            await get(pool, timeouts=Timeouts(first_byte=0.1))
        assert info.value.kind == "first_byte"
        upstream.handler = lambda r: sse_reply([b"a", b"b"], interval=0.5)
        with pytest.raises(UpstreamTimeout) as info:
            await get(pool, timeouts=Timeouts(idle=0.1))
        assert info.value.kind == "idle"
        with pytest.raises(UpstreamTimeout) as info:
            await get(pool, timeouts=Timeouts(total=0.2))
        assert info.value.kind == "total"
        upstream.handler = lambda r: Reply(chunks=[b"a", b"b", b"c"], drop_after=1)
        with pytest.raises(UpstreamBroken):
            await get(pool)
        assert pool.in_use == 0
        await pool.aclose()

        closed = make_pool(1)
        with pytest.raises(UpstreamUnreachable):
            await get(closed)
        assert closed.size == 0

    asyncio.run(run())


def test_json_reply_helper_roundtrip(upstream):
    upstream.handler = lambda r: json_reply(r.body)

    async def run() -> None:
        pool = make_pool(upstream.port)
        body = b'{"x":"' + b"y" * 300_000 + b'"}'
        assert await get(pool, body) == body
        await pool.aclose()

    asyncio.run(run())


def test_a_connection_handed_over_as_the_wait_times_out_is_not_lost(upstream):
    """The race a burst hit: a connection is released to a waiter in the same loop turn as
    its wait times out (the release runs first, the timeout's cancel next, the waiter's
    wake-up last). The waiter must keep the connection -- before the fix it raised
    PoolTimeout and the connection's slot stayed "in use" for good."""
    upstream.handler = lambda r: Reply(chunks=[b"ok"], content_length=True)

    async def run() -> None:
        loop = asyncio.get_running_loop()
        pool = make_pool(upstream.port, max_connections=1, pool_timeout=0.2)
        conn = await pool.acquire()
        t0 = loop.time()
        waiter = asyncio.ensure_future(pool.acquire())
        await asyncio.sleep(0)  # the waiter is now waiting, its timeout due at about t0 + 0.2
        import time

        loop.call_at(t0 + 0.1, time.sleep, 0.2)  # block the loop past the deadline ...
        loop.call_at(t0 + 0.15, pool.release, conn)  # ... so the release and the timeout are due together
        got = await waiter  # the connection, or its slot to open a new one in (it was never used)
        pool.release(got)
        assert pool.in_use == 0 and pool.size == len(pool.idle) <= 1
        await pool.aclose()

    asyncio.run(run())
