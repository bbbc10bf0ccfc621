"""Serve a model request through the response cache.

Caching is opt-in: only endpoints listed under ``cache.routes`` (and, when the route
lists ``models``, only those models) are cached, and a request with ``Cache-Control:
no-cache`` skips the lookup (its fresh answer is still stored) while ``no-store``
skips both. :meth:`ResponseCache.serve`:

1. looks the key up (:mod:`fastgw.cache.key`); a hit is answered at once, marked
   ``x-fastgw-cache: hit``, recorded with path ``cache`` and zero tokens (cost 0);
2. on a miss, the first request becomes the *leader*: it goes upstream as usual,
   marked ``x-fastgw-cache: miss``, while what its client receives (status, type,
   body bytes) is recorded; identical requests arriving meanwhile wait for it and
   are answered from its recording (one upstream call for all of them, per worker).
   With the Redis backend the leader first joins the other workers and instances
   (:mod:`fastgw.cache.coalesce`): it goes upstream only when it owns the key's lock,
   and otherwise waits for the owner's stored answer, served as a hit;
3. a complete 200 answer (a stream that ended with its final event) is stored with
   the route's TTL; anything else is not, and waiting requests go upstream themselves.

A cached stream is replayed as SSE in the client's shape: the usage chunk only when
the client asked for it (``stream_options.include_usage``); a client asking for usage
from a stream stored without it is served fresh.
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from fastgw.cache.backends import Entry, MemoryCache, RedisCache
from fastgw.cache.coalesce import Coalescer, fetch_bound, usable
from fastgw.cache.key import cache_key, normalise
from fastgw.config_shared import CacheConfig, CacheRoute
from fastgw.controls import metrics
from fastgw.controls.usage import StreamUsageTap, Usage
from fastgw.exchange import Exchange, header

if TYPE_CHECKING:
    from fastgw.routing.router import Route

log = logging.getLogger("fastgw.cache")

metrics.REGISTRY.define("fastgw_cache_requests_total", "counter",
                        "Requests on cached routes by result (hit|miss|bypass).", ("result",))

HIT = (b"x-fastgw-cache", b"hit")
MISS = (b"x-fastgw-cache", b"miss")
_SSE = b"text/event-stream"
_ZERO = Usage()


class _Recorder:
    """Wraps an exchange's ``send`` to keep what the client receives, up to a size."""

    __slots__ = ("body", "content_type", "limit", "send", "size", "status", "too_big")

    def __init__(self, send: Callable[[dict[str, Any]], Awaitable[None]], limit: int) -> None:
        self.send = send
        self.limit = limit
        self.status = 0
        self.content_type = b""
        self.body: list[bytes] = []
        self.size = 0
        self.too_big = False

    async def __call__(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            headers = message["headers"]
            for name, value in headers:
                if name == b"content-type":
                    self.content_type = value
            message = {**message, "headers": [*headers, MISS]}
        else:
            chunk = message.get("body", b"")
            if chunk and not self.too_big:
                self.size += len(chunk)
                if self.size > self.limit:
                    self.too_big = True
                    self.body = []
                else:
                    self.body.append(chunk)
        await self.send(message)


def _complete_stream(body: bytes, endpoint: str) -> bool:
    tail = body[-4096:]
    if endpoint == "/v1/responses":
        return b"response.completed" in tail
    return tail.rstrip().endswith(b"data: [DONE]")


class ResponseCache:
    def __init__(self, cfg: CacheConfig, backend: MemoryCache | RedisCache) -> None:
        self.cfg = cfg
        self.backend = backend
        self.routes = {path[len("/v1"):]: route for path, route in cfg.routes.items()}
        self._flights: dict[str, asyncio.Future[Entry | None]] = {}
        # Across workers and instances: with the Redis backend unless cache.coalesce_wait_s is 0.
        self.coalescer = (Coalescer(backend.redis, backend.prefix, cfg.coalesce_wait_s, cfg.coalesce_lock_s)
                          if isinstance(backend, RedisCache) and cfg.coalesce_wait_s > 0 else None)

    def route_for(self, suffix: str, model: str, qualified: str) -> CacheRoute | None:
        route = self.routes.get(suffix)
        if route is None:
            return None
        if route.models and not any(fnmatch.fnmatchcase(m, p) for p in route.models for m in (model, qualified)):
            return None
        return route

    async def serve(self, ex: Exchange, suffix: str, route: CacheRoute, body: bytes, include_usage: bool,
                    target: Route, dispatch: Callable[[], Awaitable[None]]) -> None:
        """Answer from the cache or through ``dispatch`` (the request sent on ``target``)."""
        control = (header(ex.scope, b"cache-control") or b"").lower()
        no_store = b"no-store" in control
        lookup = not no_store and b"no-cache" not in control
        normalised = normalise(body)
        if normalised is None or no_store:
            metrics.REGISTRY.inc("fastgw_cache_requests_total", ("bypass",))
            await self._dispatch_marked(ex, dispatch)
            return
        endpoint = "/v1" + suffix
        tenant = self.cfg.namespace or (f"key:{ex.key.id}" if ex.key is not None else "gateway")
        key = cache_key(tenant, endpoint, normalised)
        if lookup:
            entry = await self.backend.get(key)
            if usable(entry, include_usage):
                await self._hit(ex, entry, include_usage)
                return
            flight = self._flights.get(key)
            if flight is not None:
                entry = await asyncio.shield(flight)
                if usable(entry, include_usage):
                    await self._hit(ex, entry, include_usage)
                    return
        leader = lookup and key not in self._flights
        flight = asyncio.get_running_loop().create_future() if leader else None
        if flight is not None:
            self._flights[key] = flight
        entry = None
        token = None
        try:
            if flight is not None and self.coalescer is not None:
                # This worker's leader for the key: the first across workers goes upstream.
                token, entry = await self.coalescer.join(key, fetch_bound(target))
                if usable(entry, include_usage):
                    await self._hit(ex, entry, include_usage)
                    return
            metrics.REGISTRY.inc("fastgw_cache_requests_total", ("miss" if lookup else "bypass",))
            recorder = _Recorder(ex.send, self.cfg.max_entry_bytes)
            ex.send = recorder
            try:
                await dispatch()
                entry = self._entry(recorder, ex.stream, endpoint)
                if entry is not None:
                    await self.backend.set(key, entry, route.ttl)
            finally:
                ex.send = recorder.send
        finally:
            if flight is not None:
                del self._flights[key]
                flight.set_result(entry)
            if token is not None:
                assert self.coalescer is not None
                await self.coalescer.release(key, token, entry is not None)

    async def stop(self) -> None:
        if self.coalescer is not None:
            await self.coalescer.stop()

    @staticmethod
    async def _dispatch_marked(ex: Exchange, dispatch: Callable[[], Awaitable[None]]) -> None:
        recorder = _Recorder(ex.send, 0)
        ex.send = recorder
        try:
            await dispatch()
        finally:
            ex.send = recorder.send

    @staticmethod
    def _entry(recorder: _Recorder, stream: bool, endpoint: str) -> Entry | None:
        if recorder.status != 200 or recorder.too_big or not recorder.body:
            return None
        data = b"".join(recorder.body)
        if stream:
            if not _complete_stream(data, endpoint):
                return None
            probe = StreamUsageTap()
            probe.feed(data)
            return Entry(200, recorder.content_type or _SSE, data, True, probe.usage is not None)
        return Entry(200, recorder.content_type or b"application/json", data, False)

    @staticmethod
    async def _hit(ex: Exchange, entry: Entry, include_usage: bool) -> None:
        metrics.REGISTRY.inc("fastgw_cache_requests_total", ("hit",))
        ex.path_taken = "cache"
        ex.usage_path = ""
        ex.usage = _ZERO
        body = entry.body
        if not entry.stream:
            await ex.respond(entry.status, body, entry.content_type, extra=[HIT])
            return
        if not include_usage and entry.has_usage:
            strip = StreamUsageTap(strip_usage_chunk=True)
            body = strip.feed(body) + strip.close()
        await ex.start(entry.status, [(b"content-type", entry.content_type), *ex.gateway_headers(), HIT])
        await ex.send({"type": "http.response.body", "body": body, "more_body": False})


def build_cache(cfg: CacheConfig, redis: Any) -> ResponseCache | None:
    """The worker's cache, or None when no route is cached."""
    if not cfg.routes:
        return None
    if cfg.backend == "redis":
        return ResponseCache(cfg, RedisCache(redis))
    return ResponseCache(cfg, MemoryCache(cfg.max_bytes))
