"""The worker's Redis connections: a bounded time per call, and a breaker over both.

:class:`SharedRedis` wraps one ``redis.asyncio`` client (the ``redis`` package, an optional
dependency: ``pip install 'fastgw[redis]'``) for occasional operations, and one
:class:`~fastgw.shared.resp.PipelinedRedis` connection for the commands issued on every
request (:meth:`SharedRedis.submit`, :meth:`SharedRedis.run_packed`, :meth:`SharedRedis.send_packed`).
:meth:`SharedRedis.call` runs one ``redis.asyncio`` operation within ``redis.timeout``
seconds (the pipelined connection bounds its own commands the same way); any failure (refused, reset, timeout, a Redis
error) is logged (at most once per ``retry_interval``), counted in
``fastgw_redis_errors_total{op}``, and opens the breaker: for ``retry_interval`` seconds
calls fail at once with :class:`RedisUnavailable` instead of waiting on a dead server.
The next call after that tries Redis again, so the gateway recovers by itself when Redis
returns. Callers apply their fail mode to :class:`RedisUnavailable`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from fastgw.config_shared import RedisConfig
from fastgw.controls import metrics
from fastgw.shared.resp import PipelinedRedis, RedisUnavailable, RespError, Script

__all__ = ["RedisUnavailable", "Script", "SharedRedis"]

log = logging.getLogger("fastgw.redis")
T = TypeVar("T")

metrics.REGISTRY.define("fastgw_redis_errors_total", "counter",
                        "Redis operations that failed or timed out (the fail mode applied).", ("op",))


class SharedRedis:
    def __init__(self, cfg: RedisConfig) -> None:
        from redis.asyncio import BlockingConnectionPool, Redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        assert cfg.url is not None
        self.cfg = cfg
        self.prefix = cfg.prefix
        # No retries inside redis-py: one bounded attempt, then the breaker decides.
        no_retry = Retry(NoBackoff(), 0)
        self.pool = BlockingConnectionPool.from_url(
            cfg.url, max_connections=cfg.max_connections, timeout=cfg.timeout,
            socket_timeout=cfg.timeout, socket_connect_timeout=cfg.timeout, retry=no_retry)
        self.client = Redis(connection_pool=self.pool, retry=no_retry)
        self.fast = PipelinedRedis(cfg.url, cfg.timeout, max_pending=max(1000, cfg.max_connections * 1000))
        self._down_until = 0.0
        self._last_log = 0.0
        self.errors = 0

    def script(self, source: str) -> Any:
        """A Lua script for :meth:`call` on ``redis.asyncio`` (registered once, called by SHA,
        loaded again if Redis lost it); per-request scripts use :meth:`run_packed` instead."""
        return self.client.register_script(source)

    def _check_breaker(self) -> None:
        if self._down_until:
            if time.monotonic() < self._down_until:
                raise RedisUnavailable("redis is marked down")
            self._down_until = 0.0

    def submit(self, payload: bytes) -> asyncio.Future[Any] | None:
        """A packed command on the pipelined connection, queued at once: the future of its
        reply, or None when the connection must be opened first (then :meth:`run_packed`).
        Raises :class:`RedisUnavailable` while the breaker is open or too much is waiting."""
        self._check_breaker()
        return self.fast.submit(payload)

    async def run_packed(self, op: str, payload: bytes, script: Script | None = None,
                         fut: asyncio.Future[Any] | None = None) -> Any:
        """The reply to a packed command (``fut``: already submitted), opening the connection when
        needed; a ``NOSCRIPT`` error loads ``script`` and sends the command once more. Every
        failure is counted and raised as :class:`RedisUnavailable`."""
        try:
            return await self.fast.execute_packed(payload, script, fut)
        except (RedisUnavailable, RespError) as exc:
            self._failed(op, exc)
            raise RedisUnavailable(str(exc)) from None

    def send_packed(self, payload: bytes) -> bool:
        """A packed command, fire and forget, on the pipelined connection; False (nothing sent)
        when it is down."""
        return self.fast.send_packed(payload)

    async def call(self, op: str, fn: Callable[[], Awaitable[T]]) -> T:
        """``fn()`` within the timeout; :class:`RedisUnavailable` on any failure."""
        self._check_breaker()
        try:
            async with asyncio.timeout(self.cfg.timeout):
                return await fn()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._failed(op, exc)
            # Idle connections to a server that went away are dead too: reconnect afresh next time.
            with contextlib.suppress(Exception):
                await self.pool.disconnect(inuse_connections=False)
            raise RedisUnavailable(str(exc)) from None

    def _failed(self, op: str, exc: BaseException) -> None:
        self.errors += 1
        metrics.REGISTRY.inc("fastgw_redis_errors_total", (op,))
        now = time.monotonic()
        self._down_until = now + self.cfg.retry_interval
        if now - self._last_log >= max(self.cfg.retry_interval, 1.0):
            self._last_log = now
            log.warning("redis %s failed (%s: %s); fail mode %s, retrying in %.1fs", op, type(exc).__name__,
                        str(exc)[:200] or "timeout", self.cfg.fail_mode, self.cfg.retry_interval)

    async def ping(self) -> bool:
        try:
            await self.call("ping", self.client.ping)
        except RedisUnavailable:
            return False
        return True

    async def close(self) -> None:
        await self.fast.close()
        try:
            await self.client.aclose()
            await self.pool.disconnect()
        except Exception as exc:  # closing a dead connection: nothing left to do
            log.debug("redis close: %s", exc)
