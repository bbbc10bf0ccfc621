"""The Redis limit scripts against a real redis-server, without a gateway: a check counts in
every rule or none, a window keeps its running total and drops seconds that left it, settling
corrects tokens (never below 0) and frees the slot, and both scripts survive SCRIPT FLUSH."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import redis

from fastgw.admission.limits import Limiter, Ticket
from fastgw.admission.memory_limits import MemoryBackend
from fastgw.admission.redis_limits import RedisBackend
from fastgw.config_shared import LimitsConfig, RedisConfig
from fastgw.controls.keys import KeyRecord
from fastgw.shared.redis import SharedRedis


def _run(redis_url: str, steps: Any) -> Any:
    async def main() -> Any:
        shared = SharedRedis(RedisConfig(url=redis_url, timeout=2.0))
        backend = RedisBackend(shared)
        lim = Limiter(LimitsConfig(), MemoryBackend())
        lim.backend = backend
        try:
            return await steps(lim, backend)
        finally:
            await shared.close()

    return asyncio.run(main())


def test_a_check_counts_every_rule_or_none_and_keeps_a_running_total(redis_server) -> None:
    key = KeyRecord(id="key_r", name="r", prefix="sk-fgw-r", rpm_limit=3, tpm_limit=100, concurrency_limit=2)
    r = redis.Redis.from_url(redis_server.url)

    async def steps(lim: Limiter, backend: RedisBackend) -> None:
        rules = lim.key_rules(key)
        first = await lim.check(rules, [1, 30, 1], "a")
        second = await lim.check(rules, [1, 30, 1], "b")
        assert isinstance(first, Ticket) and isinstance(second, Ticket)
        assert dict(second.headers)[b"x-ratelimit-remaining-tokens"] == b"40"
        refused = await lim.check(rules, [1, 30, 1], "c")  # the concurrency rule is full...
        assert not isinstance(refused, Ticket) and refused is not None
        assert refused.error.code == "key_concurrency_limit"
        assert int(r.hget("fastgw:rl:key:key_r:rpm", "t")) == 2  # ...and nothing else counted it
        # Settling: the first used 10 tokens (estimated 30), the second 50; both free their slot.
        lim.settle(first, 10)
        lim.settle(second, 50)
        await backend.redis.fast.execute("PING")  # the fire-and-forget scripts ran before this
        assert int(r.hget("fastgw:rl:key:key_r:tpm", "t")) == 60
        assert r.zcard("fastgw:rl:key:key_r:concurrency") == 0
        # A correction below zero stops at zero, in the second and in the total.
        third = await lim.check(rules, [1, 5, 1], "d")
        assert isinstance(third, Ticket)
        tpm = "fastgw:rl:key:key_r:tpm"
        total, in_second = int(r.hget(tpm, "t")), int(r.hget(tpm, str(third.bucket)))
        backend.adjust(third, [0, -10_000, 1])
        await backend.redis.fast.execute("PING")
        assert int(r.hget(tpm, str(third.bucket))) == 0
        assert int(r.hget(tpm, "t")) == total - in_second
        assert r.zcard("fastgw:rl:key:key_r:concurrency") == 0

    _run(redis_server.url, steps)


def test_seconds_that_left_the_window_are_dropped_from_the_total(redis_server) -> None:
    key = KeyRecord(id="key_w", name="w", prefix="sk-fgw-w", rpm_limit=10)
    r = redis.Redis.from_url(redis_server.url)
    counter = "fastgw:rl:key:key_w:rpm"
    old = int(time.time()) - 100
    # Nine requests counted 100 seconds ago: the window is "full" by its total alone.
    r.hset(counter, mapping={str(old): 9, "t": 9, "o": old})

    async def steps(lim: Limiter, backend: RedisBackend) -> None:
        ticket = await lim.check(lim.key_rules(key), [1], "a")
        assert isinstance(ticket, Ticket)
        assert dict(ticket.headers)[b"x-ratelimit-remaining-requests"] == b"9"

    _run(redis_server.url, steps)
    assert not r.hexists(counter, str(old))
    assert int(r.hget(counter, "t")) == 1 and int(r.hget(counter, "o")) >= old + 100


def test_both_scripts_run_after_a_script_flush(redis_server) -> None:
    key = KeyRecord(id="key_f", name="f", prefix="sk-fgw-f", tpm_limit=1000, concurrency_limit=1)
    r = redis.Redis.from_url(redis_server.url)

    async def steps(lim: Limiter, backend: RedisBackend) -> None:
        rules = lim.key_rules(key)
        first = await lim.check(rules, [100, 1], "a")
        assert isinstance(first, Ticket)
        r.script_flush()
        lim.settle(first, 40)
        second = await lim.check(rules, [100, 1], "b")  # NOSCRIPT: loaded again, then run
        assert isinstance(second, Ticket)
        assert dict(second.headers)[b"x-ratelimit-remaining-tokens"] == b"860"
        assert backend.redis.errors == 0

    _run(redis_server.url, steps)
