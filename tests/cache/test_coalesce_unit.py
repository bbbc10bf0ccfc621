"""fastgw.cache.coalesce and fastgw.cache.lockrefresh against a real ``redis-server``, two
coalescers standing for two instances: a waiter woken by the owner's publication long before
its poll, a lost publication caught by the poll, the owner's lock refreshed while it fetches
and no longer once released or past its bound, refresh failures counted, never raised, and the refresh's bound taken from the route."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastgw.cache.backends import Entry, RedisCache
from fastgw.cache.coalesce import Coalescer, fetch_bound
from fastgw.config import parse_config
from fastgw.config_shared import RedisConfig
from fastgw.controls import metrics
from fastgw.routing.providers import Provider
from fastgw.routing.router import Router
from fastgw.shared.redis import SharedRedis
from fastgw.upstream.backend import AsyncioBackend

ENTRY = Entry(200, b"application/json", b'{"answer":42}', False)
# A poll this slow never answers within the test's bounds: only a publication can.
SLOW_POLL = 10.0


def counter(name: str, *labels: str) -> float:
    return metrics.REGISTRY.counters[name].get(labels, 0.0)


def wakeups(source: str) -> float:
    return counter("fastgw_cache_coalesce_wakeups_total", source)


async def until(check: Callable[[], bool | Awaitable[bool]], within: float = 5.0) -> None:
    """Until ``check()`` (plain or awaitable) holds, polled; fails past ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        result = check()
        if result if isinstance(result, bool) else await result:
            return
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


async def gone(client: Any, key: str) -> bool:
    return bool(await client.exists(key) == 0)


class Instance:
    """One gateway's view: its Redis connections, cache backend and coalescer."""

    def __init__(self, url: str, lock_s: float = 5.0, poll: float = SLOW_POLL) -> None:
        self.redis = SharedRedis(RedisConfig(url=url, timeout=2.0, retry_interval=0.05))
        self.cache = RedisCache(self.redis)
        self.coalescer = Coalescer(self.redis, self.cache.prefix, 30.0, lock_s, poll_first=poll, poll_max=poll)

    def lock(self, key: str) -> str:
        return self.coalescer.lock_prefix + key

    async def close(self) -> None:
        await self.coalescer.stop()
        await self.redis.close()


def test_a_waiter_is_woken_by_the_owners_publication_long_before_its_poll(redis_server) -> None:
    async def main() -> tuple[Entry | None, float]:
        owner, other = Instance(redis_server.url), Instance(redis_server.url)
        try:
            token, _ = await owner.coalescer.join("k", 60)
            assert token is not None
            waiting = asyncio.create_task(other.coalescer.join("k", 60))

            async def subscribed() -> bool:
                return "k" in other.coalescer._wakers and await owner.redis.client.pubsub_numpat() >= 1

            await until(subscribed)
            started = time.monotonic()
            await owner.cache.set("k", ENTRY, 60)
            await owner.coalescer.release("k", token, True)
            _, entry = await asyncio.wait_for(waiting, SLOW_POLL / 2)
            return entry, time.monotonic() - started
        finally:
            await owner.close()
            await other.close()

    before = (wakeups("pubsub"), wakeups("poll"))
    entry, elapsed = asyncio.run(main())
    assert entry == ENTRY
    assert elapsed < SLOW_POLL / 2
    assert (wakeups("pubsub"), wakeups("poll")) == (before[0] + 1, before[1])


def test_a_lost_publication_is_caught_by_the_poll(redis_server) -> None:
    async def main() -> Entry | None:
        owner, other = Instance(redis_server.url), Instance(redis_server.url, poll=0.05)
        try:
            token, _ = await owner.coalescer.join("k", 60)
            assert token is not None
            waiting = asyncio.create_task(other.coalescer.join("k", 60))
            await until(lambda: "k" in other.coalescer._wakers)
            # The answer stored and the lock dropped without a publication.
            await owner.cache.set("k", ENTRY, 60)
            owner.coalescer.refresher.drop(owner.lock("k"))
            await owner.redis.client.delete(owner.lock("k"))
            _, entry = await asyncio.wait_for(waiting, 5)
            return entry
        finally:
            await owner.close()
            await other.close()

    before = (wakeups("pubsub"), wakeups("poll"))
    assert asyncio.run(main()) == ENTRY
    assert (wakeups("pubsub"), wakeups("poll")) == (before[0], before[1] + 1)


def test_the_owner_keeps_its_lock_alive_while_fetching_and_stops_once_released(redis_server) -> None:
    async def main() -> None:
        owner = Instance(redis_server.url, lock_s=2.0)
        client = owner.redis.client
        try:
            token, _ = await owner.coalescer.join("k", 60)
            assert token is not None
            # Over twice the lock's TTL: only the refresh keeps it, with the owner's token.
            await asyncio.sleep(4.5)
            assert await client.get(owner.lock("k")) == token.encode()
            await owner.coalescer.release("k", token, True)
            assert await client.exists(owner.lock("k")) == 0
            # Nothing left to refresh: the refresher's task ends by itself.
            await until(lambda: not owner.coalescer.refresher.running)
            assert len(owner.coalescer.refresher) == 0
        finally:
            await owner.close()

    asyncio.run(main())


def test_the_refresh_stops_at_the_owners_bound_and_its_lock_expires(redis_server) -> None:
    async def main() -> None:
        owner = Instance(redis_server.url, lock_s=0.6)
        client = owner.redis.client
        try:
            token, _ = await owner.coalescer.join("k", 0.5)
            assert token is not None
            # Never released: the lock still goes once the bound is past, and so does the task.
            await until(lambda: not owner.coalescer.refresher.running)
            await until(lambda: gone(client, owner.lock("k")))
        finally:
            await owner.close()

    asyncio.run(main())


def test_a_lock_taken_by_another_owner_is_not_refreshed(redis_server) -> None:
    async def main() -> None:
        owner = Instance(redis_server.url, lock_s=0.6)
        client = owner.redis.client
        try:
            token, _ = await owner.coalescer.join("k", 60)
            assert token is not None
            await client.set(owner.lock("k"), b"someone-else", px=60_000)
            await until(lambda: len(owner.coalescer.refresher) == 0)
            assert await client.get(owner.lock("k")) == b"someone-else"
            assert await client.pttl(owner.lock("k")) > 50_000
        finally:
            await owner.close()

    asyncio.run(main())


def test_a_failed_refresh_is_counted_and_never_raises(redis_server) -> None:
    async def main() -> None:
        owner = Instance(redis_server.url, lock_s=0.3)
        try:
            token, _ = await owner.coalescer.join("k", 60)
            assert token is not None
            redis_server.kill()
            await until(lambda: counter("fastgw_redis_errors_total", "cache_refresh") > before)
            assert owner.coalescer.refresher.running
            # Releasing against a dead Redis is no error either, and ends the refreshing.
            await owner.coalescer.release("k", token, False)
            await until(lambda: not owner.coalescer.refresher.running)
        finally:
            await owner.close()

    before = counter("fastgw_redis_errors_total", "cache_refresh")
    asyncio.run(main())


def test_the_refresh_bound_is_the_time_the_upstream_call_may_take():
    text = """
providers:
  - {name: p, type: openai, base_url: "http://127.0.0.1:9/v1", api_key: k, models: [m], timeouts: {total: 100}}
  - {name: q, type: openai, base_url: "http://127.0.0.1:9/v1", api_key: k, models: [n], timeouts: {total: 50}}
routes:
  both: {targets: [p/m, q/n], deadline_s: 20}
aliases:
  either: [q/n, p/m]
"""
    config = parse_config(text, env={})
    router = Router([Provider(p, AsyncioBackend()) for p in config.providers], config.aliases, config.routes)
    # One target: its total timeout; a route: its deadline for an answer, plus that answer's own.
    assert fetch_bound(router.resolve("m")) == 100
    assert fetch_bound(router.resolve("both")) == 20 + 100
    assert fetch_bound(router.resolve("either")) == 60 + 100
