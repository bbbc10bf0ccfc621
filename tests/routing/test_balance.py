"""Balancing in-process: the strategies' choices over real deployment objects (no network)."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from fastgw.config import ProviderConfig
from fastgw.routing import balance
from fastgw.routing.attempts import backoff
from fastgw.routing.breaker import Breaker
from fastgw.routing.policy import BreakerConfig, RetryConfig, RouteConfig, TargetConfig
from fastgw.routing.providers import Provider
from fastgw.routing.targets import build_plan
from fastgw.upstream.backend import AsyncioBackend


def plan_of(strategy: str, weights: dict[str, float], **kw):
    backend = AsyncioBackend()
    providers = {n: Provider(ProviderConfig(name=n, type="openai", base_url=f"http://127.0.0.1:9/{n}"), backend)
                 for n in weights}
    cfg = RouteConfig(targets=[TargetConfig(f"{n}/m", weight=w) for n, w in weights.items()], strategy=strategy,
                      **kw)
    return build_plan("r", cfg, lambda t: (providers[t.split("/")[0]], "m"))[0]


def test_weighted_over_1000_requests_follows_the_weights():
    random.seed(1234)
    plan = plan_of("weighted", {"a": 6, "b": 3, "c": 1})
    got = Counter(balance.order(plan, 0.0)[0].provider.name for _ in range(1000))
    assert sum(got.values()) == 1000
    for name, share in (("a", 0.6), ("b", 0.3), ("c", 0.1)):
        assert abs(got[name] / 1000 - share) < 0.04, got


def test_every_order_lists_each_available_deployment_once():
    plan = plan_of("weighted", {"a": 1, "b": 1, "c": 1})
    for _ in range(50):
        names = [d.provider.name for d in balance.order(plan, 0.0)]
        assert sorted(names) == ["a", "b", "c"]


def test_least_inflight_prefers_the_idle_deployment():
    plan = plan_of("least_inflight", {"a": 1, "b": 1})
    a, b = plan.deployments
    a.inflight = 3
    assert all(balance.order(plan, 0.0)[0] is b for _ in range(10))
    a.inflight = b.inflight = 0
    firsts = Counter(balance.order(plan, 0.0)[0].provider.name for _ in range(10))
    assert firsts == {"a": 5, "b": 5}  # ties rotate


def test_lowest_latency_measures_everyone_then_picks_the_fastest():
    plan = plan_of("lowest_latency", {"a": 1, "b": 1})
    a, b = plan.deployments
    a.observe_ttfb(0.5)
    assert balance.order(plan, 0.0)[0] is b  # no sample yet: measured first
    b.observe_ttfb(0.05)
    assert balance.order(plan, 0.0)[0] is b
    for _ in range(30):
        b.observe_ttfb(1.0)
    assert balance.order(plan, 0.0)[0] is a


def test_sticky_sessions_hold_and_spread():
    plan = plan_of("weighted", {"a": 1, "b": 1, "c": 1})
    for s in range(20):
        session = f"s{s}".encode()
        first = balance.order(plan, 0.0, session)[0]
        assert all(balance.order(plan, 0.0, session)[0] is first for _ in range(5))
    spread = Counter(balance.order(plan, 0.0, f"user-{i}".encode())[0].provider.name for i in range(300))
    assert set(spread) == {"a", "b", "c"} and min(spread.values()) > 60


def test_sticky_session_moves_only_when_its_deployment_is_down():
    plan = plan_of("weighted", {"a": 1, "b": 1, "c": 1})
    sessions = [f"s{i}".encode() for i in range(60)]
    before = {s: balance.order(plan, 0.0, s)[0] for s in sessions}
    down = plan.deployments[0]
    down.breaker._open(0.0)
    after = {s: balance.order(plan, 1.0, s)[0] for s in sessions}
    for s in sessions:
        if before[s] is not down:
            assert after[s] is before[s]
        else:
            assert after[s] is not down


def test_priority_groups_come_first_and_unavailable_deployments_are_left_out():
    plan = plan_of("ordered", {"a": 1, "b": 1})
    plan.deployments[1].priority = -1
    plan.deployments.sort(key=lambda d: d.priority)
    assert [d.provider.name for d in balance.order(plan, 0.0)] == ["b", "a"]
    plan.deployments[0].not_before = 5.0
    assert [d.provider.name for d in balance.order(plan, 1.0)] == ["a"]
    plan.deployments[1].breaker._open(1.0)
    assert balance.order(plan, 2.0) == []


@pytest.mark.parametrize("failures", [3])
def test_breaker_opens_probes_and_closes(failures):
    br = Breaker(BreakerConfig(consecutive_failures=failures, cooldown_s=10, half_open_probes=1))
    for i in range(failures):
        assert br.allow(float(i))
        br.failure(float(i))
    assert br.state_name == "open" and not br.allow(5.0)
    assert br.allow(12.0) and br.state_name == "half_open"
    assert not br.allow(12.1)  # one probe at a time
    br.failure(12.2)
    assert br.state_name == "open" and not br.available(20.0)
    assert br.allow(23.0)
    br.success(23.1)
    assert br.state_name == "closed" and br.allow(23.2)


def test_breaker_opens_on_error_rate_and_a_disabled_one_never_opens():
    br = Breaker(BreakerConfig(consecutive_failures=0, error_rate=0.5, min_requests=10, window_s=60))
    for i in range(10):
        br.success(float(i)) if i % 2 else br.failure(float(i))
    assert br.state_name == "closed"  # 5 of 10, the last one a success
    br.failure(10.0)
    assert br.state_name == "open"  # 6 of 11
    off = Breaker(BreakerConfig(enabled=False, consecutive_failures=1))
    off.failure(0.0)
    assert off.state_name == "closed"


def test_backoff_is_exponential_with_full_jitter_and_capped():
    random.seed(99)
    plan = plan_of("ordered", {"a": 1}, retry=RetryConfig(backoff_base_ms=100, backoff_max_ms=400))
    for waits, cap in ((0, 0.1), (1, 0.2), (2, 0.4), (5, 0.4)):
        delays = [backoff(plan, waits) for _ in range(200)]
        assert min(delays) >= 0 and max(delays) <= cap
        assert max(delays) > cap * 0.9 and min(delays) < cap * 0.1  # full jitter: the whole range


@pytest.mark.parametrize("cooldown", [30.0, 300.0])
def test_a_refused_key_sits_out_exactly_key_cooldown_s(cooldown):
    cfg = ProviderConfig(name="p", type="openai", base_url="http://127.0.0.1:9/v1",
                         api_keys=["sk-one-0000000001", "sk-two-0000000002"], key_cooldown_s=cooldown)
    ring = Provider(cfg, AsyncioBackend()).keys
    assert ring is not None
    first = ring.pick(0.0)
    assert ring.answered(first, 401, 0.0)
    # Set aside: every pick before the cool-down ends is the other key.
    assert {ring.pick(t) is first for t in (1.0, 2.0, cooldown - 0.5, cooldown - 0.1)} == {False}
    assert ring.usable(cooldown - 0.1) == 1
    # Back in rotation once key_cooldown_s has passed.
    assert ring.usable(cooldown) == 2
    assert first in (ring.pick(cooldown), ring.pick(cooldown))
