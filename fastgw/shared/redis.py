"""The worker's Redis connection: a bounded pool, a bounded time per call, and a breaker.

:class:`SharedRedis` wraps one ``redis.asyncio`` client (the ``redis`` package, an
optional dependency: ``pip install 'fastgw[redis]'``). :meth:`SharedRedis.call` runs one
operation within ``redis.timeout`` seconds; any failure (refused, reset, timeout, a Redis
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

log = logging.getLogger("fastgw.redis")
T = TypeVar("T")

metrics.REGISTRY.define("fastgw_redis_errors_total", "counter",
                        "Redis operations that failed or timed out (the fail mode applied).", ("op",))


class RedisUnavailable(Exception):
    """Redis did not answer (or the breaker is open after a recent failure)."""


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
        self._down_until = 0.0
        self._last_log = 0.0
        self.errors = 0

    def script(self, source: str) -> Any:
        """A Lua script registered once; called by SHA (loaded again if Redis lost it)."""
        return self.client.register_script(source)

    async def call(self, op: str, fn: Callable[[], Awaitable[T]]) -> T:
        """``fn()`` within the timeout; :class:`RedisUnavailable` on any failure."""
        if self._down_until:
            if time.monotonic() < self._down_until:
                raise RedisUnavailable("redis is marked down")
            self._down_until = 0.0
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
        try:
            await self.client.aclose()
            await self.pool.disconnect()
        except Exception as exc:  # closing a dead connection: nothing left to do
            log.debug("redis close: %s", exc)
