"""Keep a worker's coalescing locks alive while their owners are still fetching.

An owner's lock (``SET NX PX``, ``cache.coalesce_lock_s``) would otherwise expire under
an answer slower than its TTL: another request would take it and go upstream as well,
and the waiters would stop waiting. Each worker has one :class:`LockRefresher`: while
it holds any lock, every third of the TTL it runs one compare-and-``PEXPIRE`` script
(per batch of locks) that extends each lock still carrying its owner's token, for as
long as the owner fetches but never longer than the owner's bound (the route's upstream
deadline) from when the lock was taken.

An owner that is done, failed or cancelled drops its lock at once (:meth:`drop`, no
await); the refresher's task ends as soon as it holds none, so nothing outlives the
requests. A dead process refreshes nothing: its locks expire within the TTL. A failed
refresh is counted like every Redis error (``fastgw_redis_errors_total{op="cache_refresh"}``)
and never fails a request; a lock found gone or taken by another owner is not refreshed again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from fastgw.shared.redis import RedisUnavailable, SharedRedis

log = logging.getLogger("fastgw.cache")

# Locks refreshed by one script call (one round trip each).
BATCH = 256

# KEYS: locks; ARGV: their tokens, then the TTL in ms. Returns the (1-based) positions of
# the locks that are no longer their owner's (expired, or taken by another request).
_REFRESH = """
local ms = ARGV[#KEYS + 1]
local lost = {}
for i, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[i] then
    redis.call('PEXPIRE', key, ms)
  else
    lost[#lost + 1] = i
  end
end
return lost
"""


class LockRefresher:
    def __init__(self, redis: SharedRedis, ttl_s: float) -> None:
        self.redis = redis
        self.ttl_ms = max(1, int(ttl_s * 1000))
        self.interval = ttl_s / 3
        self._script = redis.script(_REFRESH)
        # lock -> (its owner's token, monotonic time after which it is no longer refreshed)
        self._held: dict[str, tuple[str, float]] = {}
        self._task: asyncio.Task[None] | None = None

    def hold(self, lock: str, token: str, for_s: float) -> None:
        """Refresh ``lock`` while it carries ``token``, for ``for_s`` seconds at most."""
        self._held[lock] = (token, time.monotonic() + for_s)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    def drop(self, lock: str) -> None:
        """The owner is done with ``lock`` (answered, failed or cancelled): stop refreshing it."""
        self._held.pop(lock, None)

    def __len__(self) -> int:
        return len(self._held)

    @property
    def running(self) -> bool:
        return self._task is not None

    async def _run(self) -> None:
        try:
            while True:
                await asyncio.sleep(self.interval)
                now = time.monotonic()
                for lock in [lock for lock, (_, until) in self._held.items() if until <= now]:
                    del self._held[lock]
                if not self._held:
                    return
                items = list(self._held.items())
                for start in range(0, len(items), BATCH):
                    if not await self._refresh(items[start:start + BATCH]):
                        break
        finally:
            self._task = None

    async def _refresh(self, batch: list[tuple[str, tuple[str, float]]]) -> bool:
        """Refresh one batch; False when Redis is unavailable (tried again next time)."""
        keys = [lock for lock, _ in batch]
        args: list[Any] = [token for _, (token, _) in batch]
        args.append(self.ttl_ms)
        try:
            lost = await self.redis.call("cache_refresh", lambda: self._script(keys=keys, args=args))
        except RedisUnavailable:
            return False
        for i in lost:
            lock, (token, _) = batch[int(i) - 1]
            held = self._held.get(lock)
            if held is not None and held[0] == token:
                log.debug("cache lock %s expired or was taken while its owner was fetching", lock)
                del self._held[lock]
        return True

    async def stop(self) -> None:
        self._held.clear()
        task = self._task
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
