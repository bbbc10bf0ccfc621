"""The per-attempt limit pieces without a gateway: a refusal says when room comes, the answer's
rate-limit headers merge a key's and a target's, only limited models get the attempt loop, a
waiter wakes when a slot is freed and leaves the queue when cancelled, and the new config keys
are validated."""

from __future__ import annotations

import asyncio
import math
import time

import pytest

from fastgw.admission.limits import Limiter, Refusal, Ticket
from fastgw.admission.memory_limits import MemoryBackend
from fastgw.admission.quota import Quota, QuotaRun, merge_headers
from fastgw.config import ConfigError, parse_config
from fastgw.config_shared import LimitsConfig, Rates
from fastgw.exchange import Exchange
from fastgw.routing.providers import Provider
from fastgw.routing.router import Router
from fastgw.routing.targets import Deployment
from fastgw.upstream.backend import AsyncioBackend

CFG = LimitsConfig(providers={"p": Rates(rpm=2, concurrency=1), "q": Rates(tpm=10)})


def test_a_refusal_says_when_room_comes():
    async def go() -> None:
        lim = Limiter(CFG, MemoryBackend())
        rpm, conc = lim.route_rules("p", "m", "m")
        first = await lim.check([rpm], [1], "r1")
        assert isinstance(first, Ticket) and first.rules == [rpm]
        await lim.check([rpm], [1], "r2")
        full = await lim.check([rpm], [1], "r3")
        assert isinstance(full, Refusal) and full.slot is None and 59 < full.wait <= 61
        assert full.error.status == 429 and full.error.code == "provider_rpm_limit"
        held = await lim.check([conc], [1], "r4")
        busy = await lim.check([conc], [1], "r5")
        assert isinstance(busy, Refusal) and busy.slot == "provider:p:concurrency" and busy.wait == math.inf
        assert isinstance(held, Ticket)
        (tpm,) = lim.route_rules("q", "m", "m")
        never = await lim.check([tpm], [11], "r6")  # larger than the limit: no wait helps
        assert isinstance(never, Refusal) and never.wait == math.inf and never.slot is None

    asyncio.run(go())


def test_rate_limit_headers_merge_to_the_trio_with_less_left():
    def trio(unit: bytes, limit: int, left: int) -> list[tuple[bytes, bytes]]:
        return [(b"x-ratelimit-limit-" + unit, str(limit).encode()),
                (b"x-ratelimit-remaining-" + unit, str(left).encode()),
                (b"x-ratelimit-reset-" + unit, b"1s")]

    key = trio(b"requests", 100, 50) + trio(b"tokens", 1000, 10)
    target = trio(b"requests", 5, 2)
    assert merge_headers(key, target) == target + trio(b"tokens", 1000, 10)
    assert merge_headers(trio(b"requests", 5, 1), target) == trio(b"requests", 5, 1)
    assert merge_headers([], target) == target and merge_headers(key, []) == key


def _router(limits: LimitsConfig) -> Router:
    text = """
providers:
  - {name: p, type: openai, base_url: "http://127.0.0.1:9/v1", api_key: k, models: [m]}
  - {name: free, type: openai, base_url: "http://127.0.0.1:9/v1", api_key: k, models: [n]}
routes:
  both: {targets: [p/m, free/n]}
  unlimited: {targets: [free/n, free/x]}
"""
    config = parse_config(text, env={})
    router = Router([Provider(p, AsyncioBackend()) for p in config.providers], {}, config.routes)
    router.use_quota(Quota(limits, Limiter(limits, MemoryBackend()), shared=False))
    return router


def test_only_models_with_limits_go_through_the_attempt_loop():
    router = _router(CFG)
    assert router.resolve("n").plan is None  # no limit: the plain path, nothing new per request
    plain = router.resolve("m")
    assert plain.plan is not None and plain.plan.quota is not None and plain.plan.attempts == 0
    assert router.plans["both"].quota is not None
    assert router.plans["unlimited"].quota is None


def _exchange() -> Exchange:
    async def receive() -> dict[str, object]:
        return {"type": "http.disconnect"}

    async def send(message: dict[str, object]) -> None:
        return None

    return Exchange({"type": "http", "headers": [], "path": "/"}, receive, send)


def test_a_waiter_wakes_when_a_slot_is_freed_and_a_cancelled_one_leaves_the_queue():
    async def go() -> None:
        limits = LimitsConfig(providers={"p": Rates(concurrency=1)}, queue_s=30, queue_max=1)
        quota = Quota(limits, Limiter(limits, MemoryBackend()), shared=False)
        router = _router(limits)
        dep: Deployment = router.resolve("m").plan.deployments[0]  # type: ignore[union-attr]
        holder, waiter, other = _exchange(), _exchange(), _exchange()
        assert await QuotaRun(quota, holder, b"{}").take(dep)
        run = QuotaRun(quota, waiter, b"{}")
        assert not await run.take(dep)
        waiting = asyncio.ensure_future(run.wait(None))
        await asyncio.sleep(0.01)
        assert quota.waiting == 1
        blocked = QuotaRun(quota, other, b"{}")
        assert not await blocked.take(dep)
        assert not await blocked.wait(None)  # queue_max 1: refused at once
        assert blocked.refused().code == "provider_concurrency_limit"
        quota.release(holder.held, 0)
        assert await asyncio.wait_for(waiting, 5) is True
        assert await run.take(dep) and waiter.held is not None
        # A waiter cancelled (its client left) is out of the queue and its slot list.
        assert not await blocked.take(dep)
        leaving = asyncio.ensure_future(blocked.wait(None))
        await asyncio.sleep(0.01)
        leaving.cancel()
        with pytest.raises(asyncio.CancelledError):
            await leaving
        assert quota.waiting == 0 and quota.slot_waiters == {}

    asyncio.run(go())


@pytest.mark.parametrize(("extra", "message"), [("queue_s: -1", "limits.queue_s: expected a number >= 0"),
                                                 ("queue_max: -2", "limits.queue_max: expected a number >= 0")])
def test_queue_keys_are_validated(extra, message):
    with pytest.raises(ConfigError) as info:
        parse_config(f"limits:\n  {extra}\n", env={})
    assert message in str(info.value)


def test_queue_defaults():
    limits = parse_config("{}", env={}).limits
    assert (limits.queue_s, limits.queue_max) == (5.0, 100)



def test_a_full_window_is_waited_for_until_its_oldest_second_leaves_and_only_when_that_is_in_time():
    async def go() -> None:
        limits = LimitsConfig(providers={"p": Rates(rpm=1)}, queue_s=30)
        # The first request is counted a minute ago (its second leaves the window within a second).
        backend = MemoryBackend(clock=lambda: time.time() - 60)
        quota = Quota(limits, Limiter(limits, backend), shared=False)
        dep: Deployment = _router(limits).resolve("m").plan.deployments[0]  # type: ignore[union-attr]
        assert await QuotaRun(quota, _exchange(), b"{}").take(dep)
        backend.clock = time.time
        run = QuotaRun(quota, _exchange(), b"{}")
        assert not await run.take(dep)
        assert 0 < run.refusals[0].wait <= 1
        assert await asyncio.wait_for(run.wait(None), 5) is True  # woken by the reset, not polled
        assert await run.take(dep)
        # Now full for a whole minute: longer than queue_s, so no wait is started.
        short = Quota(LimitsConfig(providers={"p": Rates(rpm=1)}, queue_s=2), quota.limiter, shared=False)
        late = QuotaRun(short, _exchange(), b"{}")
        assert not await late.take(dep)
        assert await late.wait(None) is False and short.waiting == 0
        assert late.refused().code == "provider_rpm_limit"

    asyncio.run(go())


def test_the_attempts_header_names_limit_skips_only_and_only_clean_names() -> None:
    ex = Exchange({"headers": []}, None, None)  # type: ignore[arg-type]
    ex.provider = "b"
    assert dict(ex.gateway_headers())[b"x-fastgw-attempts"] == b"1"  # a plain model, no attempt loop
    ex.attempt_log = ["a/m:provider_rpm_limit", "b/m:503", "a/x\r\ny:model_tpm_limit", "b/m:200"]
    ex.attempts = 2
    # Failed attempts are counted, not named; a skipped name the client wrote is echoed only when clean.
    assert dict(ex.gateway_headers())[b"x-fastgw-attempts"] == b"2, a/m:provider_rpm_limit"
