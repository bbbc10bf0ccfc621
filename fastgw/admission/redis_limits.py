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
from collections.abc import Sequence

from fastgw.admission.limits import (
    BUCKETS,
    CONCURRENCY_KIND,
    WINDOW,
    LimitsUnavailable,
    Outcome,
    RuleSet,
    Ticket,
)
from fastgw.shared.redis import RedisUnavailable, Script, SharedRedis
from fastgw.shared.resp import Arg, bulk

log = logging.getLogger("fastgw.limits")

# KEYS: one counter per rule. ARGV: lease seconds, per rule its kind and limit (the part that
# is the same for every request of a rule set), then the request id and per rule its cost.
ACQUIRE = f"""
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local cur = tonumber(t[1])
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
  if failed == 0 and u + tonumber(ARGV[2 * n + 2 + i]) > tonumber(ARGV[2 * i + 1]) then failed = i end
end
if failed == 0 then
  for i = 1, n do
    local key = KEYS[i]
    local cost = tonumber(ARGV[2 * n + 2 + i])
    if ARGV[2 * i] == 'w' then
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

class _Packed:
    """A rule set's commands with their constant parts packed once."""

    __slots__ = ("acquire", "release")

    def __init__(self, prefix: str, sha: str, lease: float, rules: RuleSet) -> None:
        keys = [prefix + r.counter for r in rules]
        head: list[Arg] = ["EVALSHA", sha, len(rules), *keys, lease]
        for rule in rules:
            head += (rule.kind, rule.limit)
        # The array holds the head, then the request id and one cost per rule.
        self.acquire = b"*%d\r\n" % (len(head) + 1 + len(rules)) + b"".join([bulk(a) for a in head])
        # Per rule: the start of its release command (the request id or the bucket and token
        # correction follow), or None when settling sends nothing for it.
        self.release: list[tuple[int, bytes] | None] = []
        for rule, key in zip(rules, keys, strict=True):
            if rule.kind == CONCURRENCY_KIND:
                self.release.append((0, b"*3\r\n$4\r\nZREM\r\n" + bulk(key)))
            elif rule.name == "tpm":
                self.release.append((1, b"*4\r\n$7\r\nHINCRBY\r\n" + bulk(key)))
            else:
                self.release.append(None)


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
        send = self.redis.send_packed
        for part in packed.release:
            if part is None:
                continue
            what, head = part
            if what == 0:
                sent = send(head + bulk(ticket.request_id))
            elif token_delta:
                sent = send(head + bulk(ticket.bucket) + bulk(token_delta))
            else:
                continue
            if not sent:
                self.dropped += 1
