"""Limits shared through Redis: one server-side script checks and counts a request.

:meth:`RedisBackend.acquire` is one ``EVALSHA`` (the script is loaded once and called by
its SHA): for each rule it reads the counter, and only when every rule has room it counts
the request in all of them, atomically (Redis runs a script alone). Windows are hashes of
one-second buckets (``HINCRBY``; buckets older than the window are deleted as they are
seen; the key expires after the window); concurrency counters are sorted sets of request
ids scored by a lease expiry, so a slot held by a dead instance frees itself. The clock is
Redis's own ``TIME``, the same for every instance.

:meth:`RedisBackend.release` (settling: the token correction and the concurrency slot)
is synchronous: its commands go out on the pipelined connection without waiting for the
replies. When Redis is down they are dropped and counted; a lost release only keeps a
concurrency slot until its lease ends.
"""

from __future__ import annotations

import logging

from fastgw.admission.limits import (
    BUCKETS,
    CONCURRENCY_KIND,
    WINDOW,
    LimitsUnavailable,
    Outcome,
    Rule,
    Ticket,
)
from fastgw.shared.redis import RedisUnavailable, Script, SharedRedis
from fastgw.shared.resp import Arg

log = logging.getLogger("fastgw.limits")

# KEYS: one counter per rule. ARGV: request id, lease seconds, then per rule: kind, limit, cost.
ACQUIRE = f"""
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local cur = tonumber(t[1])
local rid = ARGV[1]
local lease = tonumber(ARGV[2])
local n = #KEYS
local used = {{}}
local oldest = {{}}
local failed = 0
for i = 1, n do
  local key = KEYS[i]
  local u = 0
  local o = -1
  if ARGV[3 * i] == 'w' then
    local h = redis.call('HGETALL', key)
    for j = 1, #h, 2 do
      local b = tonumber(h[j])
      if b < cur - {WINDOW} then
        redis.call('HDEL', key, h[j])
      else
        u = u + tonumber(h[j + 1])
        if o < 0 or b < o then o = b end
      end
    end
  else
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
    u = redis.call('ZCARD', key)
  end
  used[i] = u
  oldest[i] = o
  if failed == 0 and u + tonumber(ARGV[3 * i + 2]) > tonumber(ARGV[3 * i + 1]) then failed = i end
end
if failed == 0 then
  for i = 1, n do
    local key = KEYS[i]
    local cost = tonumber(ARGV[3 * i + 2])
    if ARGV[3 * i] == 'w' then
      redis.call('HINCRBY', key, cur, cost)
      redis.call('EXPIRE', key, {BUCKETS + 1})
      if oldest[i] < 0 then oldest[i] = cur end
    else
      redis.call('ZADD', key, now + lease, rid)
      redis.call('EXPIRE', key, math.ceil(lease) + 1)
    end
    used[i] = used[i] + cost
  end
end
local out = {{failed, tostring(now)}}
for i = 1, n do
  out[#out + 1] = used[i]
  out[#out + 1] = oldest[i]
end
return out
"""

class RedisBackend:
    def __init__(self, redis: SharedRedis, lease: float = 900.0) -> None:
        self.redis = redis
        self.lease = lease
        self.prefix = redis.prefix + "rl:"
        self._acquire = Script(ACQUIRE)
        self.dropped = 0

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None  # SharedRedis.close lets the releases already sent be answered

    async def acquire(self, rules: list[Rule], costs: list[int], request_id: str) -> Outcome:
        prefix = self.prefix
        keys: list[Arg] = [prefix + r.counter for r in rules]
        args: list[Arg] = [request_id, self.lease]
        for rule, cost in zip(rules, costs, strict=True):
            args += (rule.kind, rule.limit, cost)
        try:
            raw = await self.redis.evalsha("limits", self._acquire, keys, args)
        except RedisUnavailable:
            raise LimitsUnavailable() from None
        return Outcome(raw[0], float(raw[1]), raw[2::2], raw[3::2])

    def release(self, ticket: Ticket, token_delta: int) -> None:
        send = self.redis.send
        for rule in ticket.rules:
            if rule.kind == CONCURRENCY_KIND:
                sent = send("ZREM", self.prefix + rule.counter, ticket.request_id)
            elif token_delta and rule.name == "tpm":
                sent = send("HINCRBY", self.prefix + rule.counter, ticket.bucket, token_delta)
            else:
                continue
            if not sent:
                self.dropped += 1
