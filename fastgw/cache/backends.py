"""Where cached answers live: an in-memory LRU bounded in bytes, or Redis with a TTL.

Both store :class:`Entry` values (msgpack-encoded in Redis) and expire them after
the route's TTL. The Redis backend is shared by every worker and instance; a
Redis failure is a miss (counted and logged by :mod:`fastgw.shared.redis`), never
an error for the client.
"""

from __future__ import annotations

import time
from collections import OrderedDict

import msgspec

from fastgw.shared.redis import RedisUnavailable, SharedRedis


class Entry(msgspec.Struct, array_like=True):
    status: int
    content_type: bytes
    body: bytes
    stream: bool
    has_usage: bool = False


_pack = msgspec.msgpack.Encoder().encode
_unpack = msgspec.msgpack.Decoder(Entry).decode


def unpack_entry(raw: bytes) -> Entry | None:
    """An entry as stored in Redis, or None when the bytes are not one."""
    try:
        return _unpack(raw)
    except msgspec.DecodeError:
        return None


class MemoryCache:
    """LRU by bytes stored (body sizes plus a fixed overhead per entry), per worker."""

    OVERHEAD = 200

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.size = 0
        self._items: OrderedDict[str, tuple[Entry, float, int]] = OrderedDict()

    async def get(self, key: str) -> Entry | None:
        item = self._items.get(key)
        if item is None:
            return None
        if item[1] <= time.monotonic():
            self._drop(key)
            return None
        self._items.move_to_end(key)
        return item[0]

    async def set(self, key: str, entry: Entry, ttl: float) -> None:
        size = len(entry.body) + self.OVERHEAD
        if size > self.max_bytes:
            return
        if key in self._items:
            self._drop(key)
        self._items[key] = (entry, time.monotonic() + ttl, size)
        self.size += size
        while self.size > self.max_bytes:
            self._drop(next(iter(self._items)))

    def _drop(self, key: str) -> None:
        _, _, size = self._items.pop(key)
        self.size -= size

    def __len__(self) -> int:
        return len(self._items)


class RedisCache:
    def __init__(self, redis: SharedRedis) -> None:
        self.redis = redis
        self.prefix = redis.prefix + "cache:"

    async def get(self, key: str) -> Entry | None:
        client = self.redis.client
        try:
            raw = await self.redis.call("cache_get", lambda: client.get(self.prefix + key))
        except RedisUnavailable:
            return None
        if raw is None:
            return None
        return unpack_entry(raw)

    async def set(self, key: str, entry: Entry, ttl: float) -> None:
        client = self.redis.client
        data = _pack(entry)
        try:
            await self.redis.call("cache_set", lambda: client.set(self.prefix + key, data, px=max(1, int(ttl * 1000))))
        except RedisUnavailable:
            return
