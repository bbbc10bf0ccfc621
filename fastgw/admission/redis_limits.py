"""Limits shared through Redis: one server-side script checks and counts a request.

:meth:`RedisBackend.acquire` is one ``EVALSHA`` (the script is loaded once and called by
its SHA): for each rule it reads the counter, and only when every rule has room it counts
the request in all of them, atomically (Redis runs a script alone). Windows are hashes of
one-second buckets with their running total (a check reads two fields; buckets older than
the window are deleted once a second; the key expires after the window); concurrency
counters are sorted sets of request ids scored by a lease expiry, so a slot held by a dead
instance frees itself. The clock is Redis's own ``TIME``, the same for every instance.
The constant part of each command is packed once per rule set.

:meth:`RedisBackend.release` (settling: the token correction and the concurrency slot)
is synchronous: one script goes out on the pipelined connection without waiting for the
reply. When Redis is down it is dropped and counted; a lost release only keeps a
concurrency slot until its lease ends.
:meth:`RedisBackend.give_back` (an admission that sent nothing upstream) is the same
script taking back the request's counts: its one-second buckets lose what it counted (never
below zero), its slots are freed.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from fastgw.admission.limits import (
    BUCKETS,
    CONCURRENCY_KIND,
    WINDOW,
    LimitsUnavailable,
    Outcome,
    RuleSet,
    Ticket,
    given_back,
)
from fastgw.shared.redis import RedisUnavailable, Script, SharedRedis
from fastgw.shared.resp import Arg, bulk

log = logging.getLogger("fastgw.limits")

# A window is a hash: one field per second still counted (its count), "t" the sum of those
# and "o" the oldest of them (-1: none). A check reads "t" and "o"; only when "o" has left the
# window (at most once a second per counter) are the buckets read, the old ones deleted and
# "t" and "o" recounted. A concurrency counter is a sorted set of request ids scored by lease end.
#
# ACQUIRE. KEYS: one counter per rule. ARGV: lease seconds, per rule its kind and limit (the
# part that is the same for every request of a rule set), then the request id and per rule its cost.
ACQUIRE = f"""
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local cur = tonumber(t[1])
local horizon = cur - {WINDOW}
local n = #KEYS
local lease = tonumber(ARGV[1])
local rid = ARGV[2 * n + 2]
local used = {{}}
local oldest = {{}}
local failed = 0
for i = 1, n do
  local key = KEYS[i]
  local u = 0
  local o = -1
  if ARGV[2 * i] == 'w' then
    local v = redis.call('HMGET', key, 't', 'o')
    u = tonumber(v[1]) or 0
    o = tonumber(v[2]) or -1
    if o >= 0 and o < horizon then
      local h = redis.call('HGETALL', key)
      u = 0
      o = -1
      for j = 1, #h, 2 do
        local f = h[j]
        if f ~= 't' and f ~= 'o' then
          local b = tonumber(f)
          if b < horizon then
            redis.call('HDEL', key, f)
          else
            u = u + tonumber(h[j + 1])
            if o < 0 or b < o then o = b end
          end
        end
      end
      redis.call('HSET', key, 't', u, 'o', o)
    end
  else
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
    u = redis.call('ZCARD', key)
  end
  used[i] = u
  oldest[i] = o
  if failed == 0 and u + tonumber(ARGV[2 * n + 2 + i]) > tonumber(ARGV[2 * i + 1]) then failed = i end
end
if failed == 0 then
  for i = 1, n do
    local key = KEYS[i]
    local cost = tonumber(ARGV[2 * n + 2 + i])
    if ARGV[2 * i] == 'w' then
      redis.call('HINCRBY', key, cur, cost)
      redis.call('HINCRBY', key, 't', cost)
      if oldest[i] < 0 then
        oldest[i] = cur
        redis.call('HSET', key, 'o', cur)
      end
      redis.call('EXPIRE', key, {BUCKETS + 1})
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

# ADJUST: settle (or give back) what a request counted. KEYS: its counters. ARGV: per counter
# its kind, then the request id, the second it was counted in, and per counter a change: a
# concurrency counter frees the request's slot when its change is not 0; a window adds the
# change to that second and to "t", only while that second is still counted (a correction
# that comes later has nothing left to correct), never below 0. Sent with EVAL, without
# waiting for the reply: a Redis that lost its scripts still runs it.
ADJUST = f"""
local cur = tonumber(redis.call('TIME')[1])
local n = #KEYS
local bucket = tonumber(ARGV[n + 2])
for i = 1, n do
  local key = KEYS[i]
  local delta = tonumber(ARGV[n + 2 + i])
  if delta ~= 0 then
    if ARGV[i] == 'c' then
      redis.call('ZREM', key, ARGV[n + 1])
    elseif bucket >= cur - {WINDOW} and redis.call('HEXISTS', key, bucket) == 1 then
      local left = redis.call('HINCRBY', key, bucket, delta)
      if left < 0 then
        redis.call('HSET', key, bucket, 0)
        delta = delta - left
      end
      redis.call('HINCRBY', key, 't', delta)
    end
  end
end
return 0
"""


class _Packed:
    """A rule set's commands with their constant parts packed once: the acquire ``EVALSHA``
    up to the request id, and the ``EVAL`` of :data:`ADJUST` up to the request id."""

    __slots__ = ("acquire", "adjust", "slots")

    def __init__(self, prefix: str, sha: str, lease: float, rules: RuleSet) -> None:
        n = len(rules)
        keys = [prefix + r.counter for r in rules]
        head: list[Arg] = ["EVALSHA", sha, n, *keys, lease]
        for rule in rules:
            head += (rule.kind, rule.limit)
        # Then the request id and one cost per rule.
        self.acquire = b"*%d\r\n" % (len(head) + 1 + n) + b"".join([bulk(a) for a in head])
        head = ["EVAL", ADJUST, n, *keys, *(r.kind for r in rules)]
        # Then the request id, the second, and one change per rule.
        self.adjust = b"*%d\r\n" % (len(head) + 2 + n) + b"".join([bulk(a) for a in head])
        self.slots = any(r.kind == CONCURRENCY_KIND for r in rules)


class RedisBackend:
    sync = False

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

    def _packed(self, rules: RuleSet) -> _Packed:
        packed = _Packed(self.prefix, self._acquire.sha, self.lease, rules)
        rules.memo = packed
        rules.memo_owner = self
        return packed

    async def acquire(self, rules: RuleSet, costs: Sequence[int], request_id: str) -> Outcome:
        packed: _Packed = rules.memo if rules.memo_owner is self else self._packed(rules)
        payload = packed.acquire + bulk(request_id) + b"".join([bulk(c) for c in costs])
        redis = self.redis
        try:
            fut = redis.submit(payload)
            if fut is None:
                raw = await redis.run_packed("limits", payload, self._acquire)
            else:
                try:
                    raw = await fut
                except Exception:  # counted, and NOSCRIPT answered by loading the script
                    raw = await redis.run_packed("limits", payload, self._acquire, fut)
        except RedisUnavailable:
            raise LimitsUnavailable() from None
        return Outcome(raw[0], float(raw[1]), raw[2::2], raw[3::2])

    def release(self, ticket: Ticket, token_delta: int) -> None:
        rules = ticket.rules
        packed: _Packed = rules.memo if rules.memo_owner is self else self._packed(rules)
        if not packed.slots and not token_delta:
            return
        deltas = [1 if r.kind == CONCURRENCY_KIND else token_delta if r.name == "tpm" else 0 for r in rules]
        self.adjust(ticket, deltas)

    def adjust(self, ticket: Ticket, deltas: Sequence[int]) -> None:
        """Send :data:`ADJUST` for ``ticket`` with one change per rule (fire and forget)."""
        rules = ticket.rules
        packed: _Packed = rules.memo if rules.memo_owner is self else self._packed(rules)
        payload = packed.adjust + bulk(ticket.request_id) + bulk(ticket.bucket) + b"".join([bulk(d) for d in deltas])
        if not self.redis.send_packed(payload):
            self.dropped += 1

    def give_back(self, ticket: Ticket) -> None:
        self.adjust(ticket, [1 if r.kind == CONCURRENCY_KIND else -given_back(r, ticket) for r in ticket.rules])
