"""The response cache: exact-match answers per tenant, in memory or in Redis.

* :mod:`fastgw.cache.key` -- the normalised request and the tenant-scoped cache key;
* :mod:`fastgw.cache.backends` -- an in-memory LRU bounded in bytes, and Redis with a TTL;
* :mod:`fastgw.cache.serve` -- lookup, single-flight coalescing of identical misses,
  recording a miss's answer, replaying a hit (JSON, or SSE in the client's shape);
* :mod:`fastgw.cache.coalesce` -- identical misses coalesced across workers and
  instances through a Redis lock and pub/sub.
"""
