"""Config sections for state shared across workers and instances: Redis, limits, budgets, cache.

:mod:`fastgw.config` embeds these Structs in :class:`fastgw.config.Config` and
calls :func:`check_shared` after decoding; the README documents every key.
"""

from __future__ import annotations

from typing import Literal

import msgspec


class Rates(msgspec.Struct, forbid_unknown_fields=True):
    """One set of limits: requests per minute, tokens per minute, requests in flight."""

    rpm: int | None = None
    tpm: int | None = None
    concurrency: int | None = None

    def any(self) -> bool:
        return self.rpm is not None or self.tpm is not None or self.concurrency is not None


class RedisConfig(msgspec.Struct, forbid_unknown_fields=True):
    # redis://[:password@]host:port/db (rediss:// for TLS). Unset: no Redis.
    url: str | None = None
    # Seconds one Redis operation may take (event-loop wait included) before it counts as a failure.
    timeout: float = 0.5
    # After a failure, Redis is not tried again for this many seconds (then retried by itself).
    retry_interval: float = 1.0
    # Redis unreachable or slow: "open" admits requests unlimited, "closed" answers 503.
    fail_mode: Literal["open", "closed"] = "open"
    max_connections: int = 64
    # Prefix of every key fastgw writes, so several gateways can share one Redis.
    prefix: str = "fastgw:"


class LimitsConfig(msgspec.Struct, forbid_unknown_fields=True):
    # "auto": Redis when redis.url is set, else in-process.
    backend: Literal["auto", "memory", "redis"] = "auto"
    # Several workers and the in-process backend: false divides every limit by the number
    # of workers (never more than the limit in total); true gives each worker the whole limit.
    per_worker: bool = False
    # For virtual keys that have none of their own (per key, not shared between keys).
    default: Rates = msgspec.field(default_factory=Rates)
    # Per model (the name the client sends, or provider/model) and per provider deployment.
    models: dict[str, Rates] = {}
    providers: dict[str, Rates] = {}
    # Seconds a concurrency slot is held at most in Redis when an instance dies mid-request.
    concurrency_lease: float = 900.0
    # Every target of a request full (model/provider limits): seconds it may wait for room
    # (0: refuse at once), and how many requests of a worker may wait at a time.
    queue_s: float = 5.0
    queue_max: int = 100


class BudgetsConfig(msgspec.Struct, forbid_unknown_fields=True):
    # A budgeted key on a model without a known price: "refuse" (403) or "allow" (unmetered).
    unpriced: Literal["refuse", "allow"] = "refuse"
    # Completion tokens assumed for the up-front reservation when the request sets no max_tokens.
    default_completion_tokens: int = 1024


class CacheRoute(msgspec.Struct, forbid_unknown_fields=True):
    """Caching for one endpoint (``/v1/chat/completions``, ...)."""

    ttl: float = 300.0
    # Model names or glob patterns cached on this route; empty: every model.
    models: list[str] = []


class CacheConfig(msgspec.Struct, forbid_unknown_fields=True):
    backend: Literal["memory", "redis"] = "memory"
    # Endpoint -> its caching; an endpoint not listed is never cached.
    routes: dict[str, CacheRoute] = {}
    # The in-memory backend's bound on stored answers (bytes, per worker).
    max_bytes: int = 64 * 1024 * 1024
    # Answers larger than this are not stored.
    max_entry_bytes: int = 1024 * 1024
    # Cache keys are scoped by virtual key; a namespace shares one cache between all keys.
    namespace: str | None = None
    # Redis backend: identical misses on other workers and instances wait up to this many
    # seconds for the first one's answer; 0: per worker only.
    coalesce_wait_s: float = 30.0
    # The first one's lock lives this long, refreshed every third of it while it is fetching
    # (within the route's upstream deadline): its waiters are released this long after it died.
    coalesce_lock_s: float = 10.0


def check_shared(redis: RedisConfig, limits: LimitsConfig, budgets: BudgetsConfig, cache: CacheConfig) -> str | None:
    """The first problem with these sections as ``path: message``, or None."""
    if redis.url is not None and not redis.url.startswith(("redis://", "rediss://", "unix://")):
        return "redis.url: expected redis://host:port/db"
    if redis.timeout <= 0 or redis.retry_interval < 0:
        return "redis.timeout: expected a number > 0"
    if redis.max_connections < 1:
        return "redis.max_connections: expected a number >= 1"
    if limits.backend == "redis" and redis.url is None:
        return "limits.backend: redis needs redis.url"
    if cache.backend == "redis" and redis.url is None:
        return "cache.backend: redis needs redis.url"
    groups = [("limits.default", {"": limits.default}), ("limits.models", limits.models),
              ("limits.providers", limits.providers)]
    for where, rates in groups:
        for name, r in rates.items():
            for field in ("rpm", "tpm", "concurrency"):
                value = getattr(r, field)
                if value is not None and value < 1:
                    return f"{where}{'.' + name if name else ''}.{field}: expected a number >= 1"
    if limits.concurrency_lease <= 0:
        return "limits.concurrency_lease: expected a number > 0"
    if limits.queue_s < 0:
        return "limits.queue_s: expected a number >= 0"
    if limits.queue_max < 0:
        return "limits.queue_max: expected a number >= 0"
    if budgets.default_completion_tokens < 0:
        return "budgets.default_completion_tokens: expected a number >= 0"
    if cache.coalesce_wait_s < 0:
        return "cache.coalesce_wait_s: expected a number >= 0"
    if cache.coalesce_lock_s <= 0:
        return "cache.coalesce_lock_s: expected a number > 0"
    for path, route in cache.routes.items():
        if not path.startswith("/v1/"):
            return f"cache.routes.{path}: expected an endpoint such as /v1/chat/completions"
        if route.ttl <= 0:
            return f"cache.routes.{path}.ttl: expected a number > 0"
    if cache.max_bytes < 1 or cache.max_entry_bytes < 1:
        return "cache.max_bytes: expected a number >= 1"
    return None
