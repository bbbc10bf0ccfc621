"""Coalescing of identical cache misses across workers and instances, through Redis.

Within one worker, :class:`fastgw.cache.serve.ResponseCache` already lets one request
(the worker's *leader* for a key) go upstream while identical ones wait for it. With
the Redis backend that leader first calls :meth:`Coalescer.join`:

* it tries to take the key's lock (``SET lock token NX PX``, the token unique to this
  request, the lock living ``cache.coalesce_wait_s`` at most); holding it, it is the
  *owner*: it goes upstream, stores the answer, then :meth:`Coalescer.release` deletes
  the lock only if it still holds it (compare-and-delete script) and publishes on the
  key's channel, whether an entry was stored or not;
* otherwise it *waits*: woken by that publication (one pattern subscription per worker,
  opened on the first wait) or, failing that, by a poll with backoff, it checks in one
  round trip whether the entry is stored (answered as a hit) or the lock is gone (the
  owner failed, was not cacheable, was killed and its lock expired): then it goes
  upstream itself, at once. It waits ``cache.coalesce_wait_s`` at most.

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
from typing import Any, TypeGuard

from fastgw.cache.backends import Entry, unpack_entry
from fastgw.shared.redis import RedisUnavailable, SharedRedis

log = logging.getLogger("fastgw.cache")

# Keys one worker waits on at once; more go upstream without waiting.
MAX_WAITERS = 1024
# The poll's first and longest pause between checks while no publication arrives.
POLL_FIRST = 0.02
POLL_MAX = 0.5
# The subscription's longest read while no owner publishes.
LISTEN_IDLE = 1.0

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
    def __init__(self, redis: SharedRedis, entry_prefix: str, wait_s: float) -> None:
        self.redis = redis
        self.wait_s = wait_s
        self.entry_prefix = entry_prefix
        self.lock_prefix = redis.prefix + "cache-lock:"
        self.channel_prefix = redis.prefix + "cache-done:"
        self._release = redis.script(_RELEASE)
        self._check = redis.script(_CHECK)
        self._wakers: dict[str, asyncio.Event] = {}
        self._listener: asyncio.Task[None] | None = None

    async def join(self, key: str) -> tuple[str | None, Entry | None]:
        """``(token, None)``: this request owns the key (release it with the token);
        ``(None, entry)``: another request's stored answer; ``(None, None)``: go upstream
        without the lock (Redis down, too many waiters, the owner failed or the wait ended)."""
        token = os.urandom(16).hex()
        lock = self.lock_prefix + key
        client = self.redis.client
        ms = max(1, int(self.wait_s * 1000))
        try:
            got = await self.redis.call("cache_lock", lambda: client.set(lock, token, nx=True, px=ms))
        except RedisUnavailable:
            return None, None
        if got:
            return token, None
        if key in self._wakers or len(self._wakers) >= MAX_WAITERS:
            return None, None
        return None, await self._wait(key)

    async def release(self, key: str, token: str, stored: bool) -> None:
        lock = self.lock_prefix + key
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
        pause = POLL_FIRST
        try:
            while True:
                try:
                    raw, held = await self.redis.call("cache_wait", lambda: self._check(keys=keys))
                except RedisUnavailable:
                    return None
                if raw:
                    return unpack_entry(raw)
                if not held:
                    return None
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(pause, remaining)):
                        await waker.wait()
                waker.clear()
                pause = min(pause * 2, POLL_MAX)
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
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._listener


def usable(entry: Entry | None, include_usage: bool) -> TypeGuard[Entry]:
    """An entry this client can be answered from (a stream stored without usage is not, when asked for)."""
    return entry is not None and (not entry.stream or entry.has_usage or not include_usage)

