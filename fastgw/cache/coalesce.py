"""Coalescing of identical cache misses across workers and instances, through Redis.

Within one worker, :class:`fastgw.cache.serve.ResponseCache` already lets one request
(the worker's *leader* for a key) go upstream while identical ones wait for it. With
the Redis backend that leader first calls :meth:`Coalescer.join`:

* it tries to take the key's lock (``SET lock token NX PX``, the token unique to this
  request, the lock living ``cache.coalesce_lock_s``); holding it, it is the *owner*:
  it goes upstream while :mod:`fastgw.cache.lockrefresh` keeps the lock alive (within
  the route's upstream deadline), stores the answer, then :meth:`Coalescer.release`
  deletes the lock only if it still holds it (compare-and-delete script) and publishes
  on the key's channel, whether an entry was stored or not;
* otherwise it *waits*: woken by that publication (one pattern subscription per worker,
  opened on the first wait) or, failing that, by a poll with backoff, it checks in one
  round trip whether the entry is stored (answered as a hit) or the lock is gone (the
  owner failed, was not cacheable, was killed and its lock expired): then it goes
  upstream itself, at once. It waits ``cache.coalesce_wait_s`` at most. Waiters the
  owner released are counted by what woke them,
  ``fastgw_cache_coalesce_wakeups_total{source="pubsub|poll"}``.

Every Redis failure fails open (the request goes upstream, coalesced per worker only),
counted by :meth:`fastgw.shared.redis.SharedRedis.call`. Waiters per worker are bounded
(one per key, :data:`MAX_WAITERS` keys); beyond that a request goes upstream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from typing import TYPE_CHECKING, Any, TypeGuard

from fastgw.cache.backends import Entry, unpack_entry
from fastgw.cache.lockrefresh import LockRefresher
from fastgw.controls import metrics
from fastgw.shared.redis import RedisUnavailable, SharedRedis

if TYPE_CHECKING:
    from fastgw.routing.router import Route

log = logging.getLogger("fastgw.cache")

metrics.REGISTRY.define("fastgw_cache_coalesce_wakeups_total", "counter",
                        "Waiters for another worker's or instance's cache miss released by the owner's "
                        "publication (pubsub) or by their own check (poll).", ("source",))

# Keys one worker waits on at once; more go upstream without waiting.
MAX_WAITERS = 1024
# The poll's first and longest pause between checks while no publication arrives.
POLL_FIRST = 0.02
POLL_MAX = 0.5
# The subscription's longest read while no owner publishes.
LISTEN_IDLE = 1.0
# An owner's lock is refreshed this long at most when its upstream has no total timeout.
FETCH_DEFAULT = 1800.0

# Owner done: drop the lock if still ours, then tell the waiters (1 stored, 0 not).
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
redis.call('PUBLISH', KEYS[2], ARGV[2])
return 1
"""
# A waiter's check: the stored entry (or false) and whether the lock is still held.
_CHECK = """
return {redis.call('GET', KEYS[1]), redis.call('EXISTS', KEYS[2])}
"""


class Coalescer:
    def __init__(self, redis: SharedRedis, entry_prefix: str, wait_s: float, lock_s: float,
                 poll_first: float = POLL_FIRST, poll_max: float = POLL_MAX) -> None:
        self.redis = redis
        self.wait_s = wait_s
        self.lock_ms = max(1, int(lock_s * 1000))
        self.poll_first = poll_first
        self.poll_max = poll_max
        self.refresher = LockRefresher(redis, lock_s)
        self.entry_prefix = entry_prefix
        self.lock_prefix = redis.prefix + "cache-lock:"
        self.channel_prefix = redis.prefix + "cache-done:"
        self._release = redis.script(_RELEASE)
        self._check = redis.script(_CHECK)
        self._wakers: dict[str, asyncio.Event] = {}
        self._listener: asyncio.Task[None] | None = None

    async def join(self, key: str, fetch_s: float) -> tuple[str | None, Entry | None]:
        """``(token, None)``: this request owns the key (release it with the token; its lock
        is kept alive for ``fetch_s`` seconds at most meanwhile); ``(None, entry)``: another
        request's stored answer; ``(None, None)``: go upstream without the lock (Redis down,
        too many waiters, the owner failed or the wait ended)."""
        token = os.urandom(16).hex()
        lock = self.lock_prefix + key
        client = self.redis.client
        ms = self.lock_ms
        try:
            got = await self.redis.call("cache_lock", lambda: client.set(lock, token, nx=True, px=ms))
        except RedisUnavailable:
            return None, None
        if got:
            self.refresher.hold(lock, token, fetch_s)
            return token, None
        if key in self._wakers or len(self._wakers) >= MAX_WAITERS:
            return None, None
        return None, await self._wait(key)

    async def release(self, key: str, token: str, stored: bool) -> None:
        lock = self.lock_prefix + key
        self.refresher.drop(lock)
        channel = self.channel_prefix + key
        try:
            await self.redis.call("cache_unlock", lambda: self._release(keys=[lock, channel],
                                                                         args=[token, b"1" if stored else b"0"]))
        except RedisUnavailable:
            return

    async def _wait(self, key: str) -> Entry | None:
        self._listen()
        waker = self._wakers[key] = asyncio.Event()
        keys = [self.entry_prefix + key, self.lock_prefix + key]
        deadline = time.monotonic() + self.wait_s
        pause = self.poll_first
        source = "poll"  # what led to the check below: the publication or the poll (or joining)
        try:
            while True:
                try:
                    raw, held = await self.redis.call("cache_wait", lambda: self._check(keys=keys))
                except RedisUnavailable:
                    return None
                if raw or not held:
                    metrics.REGISTRY.inc("fastgw_cache_coalesce_wakeups_total", (source,))
                    return unpack_entry(raw) if raw else None
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(pause, remaining)):
                        await waker.wait()
                source = "pubsub" if waker.is_set() else "poll"
                waker.clear()
                pause = min(pause * 2, self.poll_max)
        finally:
            del self._wakers[key]

    def _listen(self) -> None:
        """The worker's subscription to every owner's publication, started once."""
        if self._listener is None or self._listener.done():
            self._listener = asyncio.get_running_loop().create_task(self._run_listener())

    async def _run_listener(self) -> None:
        while True:
            with contextlib.suppress(RedisUnavailable):
                await self._subscription()
            # Waiters poll meanwhile; subscribe again once Redis may be back.
            await asyncio.sleep(max(self.redis.cfg.retry_interval, 0.1))

    async def _subscription(self) -> None:
        """Wake the waiter of each key an owner publishes, until the connection fails."""
        start = len(self.channel_prefix)
        pubsub: Any = self.redis.client.pubsub()
        try:
            await self.redis.call("cache_subscribe", lambda: pubsub.psubscribe(self.channel_prefix + "*"))
            while True:
                # Not through SharedRedis.call: an idle read is no failure, and a late wake-up
                # under load must not open the breaker for every Redis user. A dropped
                # connection ends the loop; the waiters' own checks count Redis failures.
                try:
                    msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=LISTEN_IDLE)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.debug("cache subscription ended: %s", exc)
                    return
                if msg is not None and msg.get("type") == "pmessage":
                    waker = self._wakers.get(msg["channel"][start:].decode(errors="replace"))
                    if waker is not None:
                        waker.set()
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()

    async def stop(self) -> None:
        await self.refresher.stop()
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._listener


def fetch_bound(route: Route) -> float:
    """The longest the owner's upstream call can last, so its lock is refreshed no longer:
    the provider's total timeout; on a route, its deadline for accepting an answer plus the
    accepted attempt's total timeout (no deadline: every attempt's, and the backoff between)."""
    plan = route.plan
    if plan is None:
        return route.provider.timeouts.total or FETCH_DEFAULT
    longest = max((d.provider.timeouts.total or FETCH_DEFAULT for d in plan.deployments), default=FETCH_DEFAULT)
    if plan.deadline is not None:
        return plan.deadline + longest
    return (plan.attempts + 1) * (longest + plan.backoff_max)


def usable(entry: Entry | None, include_usage: bool) -> TypeGuard[Entry]:
    """An entry this client can be answered from (a stream stored without usage is not, when asked for)."""
    return entry is not None and (not entry.stream or entry.has_usage or not include_usage)

