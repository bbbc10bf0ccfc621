"""Limits shared through a real ``redis-server``: two instances and two workers behave as one
gateway, a budget raced by two instances is not overspent, and Redis going away mid-test
gives the configured fail mode without a crash, then recovers by itself."""

from __future__ import annotations

import json
import time

import pytest
from gateway import GatewayProcess
from limits_support import MASTER, burst, chat, create_key, provider_with_usage, statuses
from rawhttp import request


def config(url: str, redis_url: str, store_url: str, extra: str = "", timeout: float = 3.0) -> str:
    # A generous redis.timeout: on a loaded test machine a short one would fail open (by
    # design) and let requests through unlimited; the fail-mode test sets a short one.
    return f"""
providers:
  - name: local
    type: openai
    base_url: {url}/v1
    api_key: sk-test
    models: [gpt-4o-mini]
master_key: {MASTER}
store_url: {store_url}
keys_cache_ttl: 0.5
pricing:
  gpt-4o-mini: {{input: 1000, output: 1000}}
redis:
  url: {redis_url}
  timeout: {timeout}
  retry_interval: 0.3
{extra}"""


def test_rpm_20_across_two_instances_lets_exactly_20_through(upstream, redis_server, tmp_path):
    upstream.handler = provider_with_usage(3, 2)
    text = config(upstream.url, redis_server.url, f"sqlite:///{tmp_path}/shared.db")
    a = GatewayProcess(text)
    b = GatewayProcess(text)
    try:
        token = create_key(a, rpm_limit=20)["key"]
        responses = burst([a.url, b.url], token, 200)
        assert statuses(responses) == {200: 20, 429: 180}
        # Both instances answered requests, and both refused some.
        assert {r.status for r in responses[0::2]} == {200, 429} or {r.status for r in responses[1::2]} == {200, 429}
        remaining = sorted(int(r.headers["x-ratelimit-remaining-requests"]) for r in responses if r.status == 200)
        assert remaining == list(range(20))
        assert "shared through Redis" in a.logs()
    finally:
        a.stop()
        b.stop()


def test_limits_shared_over_a_unix_socket_with_a_password_and_database(upstream, redis_unix_server, tmp_path):
    redis_unix_server.kill()
    redis_unix_server.extra_args = ["--requirepass", "s3cret"]
    redis_unix_server.start()
    url = f"unix://:s3cret@{redis_unix_server.socket}?db=4"
    upstream.handler = provider_with_usage(3, 2)
    text = config(upstream.url, url, f"sqlite:///{tmp_path}/shared.db")
    a = GatewayProcess(text)
    b = GatewayProcess(text)
    try:
        token = create_key(a, rpm_limit=5)["key"]
        # One limit across both instances (each alone would let 5 through; failing open, all 20).
        assert statuses(burst([a.url, b.url], token, 20)) == {200: 5, 429: 15}
        assert "shared through Redis" in a.logs() and "not reachable" not in a.logs() + b.logs()
        assert "s3cret" not in a.logs() + b.logs()
    finally:
        a.stop()
        b.stop()


def test_rpm_20_across_two_workers_lets_exactly_20_through(upstream, redis_server, tmp_path):
    upstream.handler = provider_with_usage(3, 2)
    g = GatewayProcess(config(upstream.url, redis_server.url, f"sqlite:///{tmp_path}/s.db"), workers=2)
    try:
        token = create_key(g, rpm_limit=20)["key"]
        assert statuses(burst([g.url], token, 200)) == {200: 20, 429: 180}
    finally:
        g.stop()


def test_tpm_and_concurrency_through_redis(upstream, redis_server, tmp_path):
    upstream.handler = provider_with_usage(15, 25)
    text = config(upstream.url, redis_server.url, f"sqlite:///{tmp_path}/s.db")
    a = GatewayProcess(text)
    b = GatewayProcess(text)
    try:
        token = create_key(a, tpm_limit=105)["key"]
        results = []
        for i in range(5):
            results.append(chat((a.url, b.url)[i % 2], token, stream=i % 2 == 1).status)
            time.sleep(0.2)  # settling is sent to Redis once the answer went out
        # 22-token estimates corrected to the real 40: three fit in 105, across both instances.
        assert results == [200, 200, 200, 429, 429]
        upstream.handler = provider_with_usage(15, 25, delay=1.0)
        slow = create_key(a, concurrency_limit=3)["key"]
        responses = burst([a.url, b.url], slow, 10)
        assert statuses(responses) == {200: 3, 429: 7}
        assert next(r for r in responses if r.status == 429).error()["code"] == "key_concurrency_limit"
        time.sleep(0.3)
        assert statuses(burst([a.url, b.url], slow, 3)) == {200: 3}
    finally:
        a.stop()
        b.stop()


def _redis_errors(url: str) -> float:
    body = request(url, "GET", "/metrics").body.decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in body.splitlines()
               if line.startswith("fastgw_redis_errors_total{"))


@pytest.mark.parametrize("fail_mode", ["open", "closed"])
def test_redis_killed_mid_test_fails_as_configured_then_recovers(upstream, redis_server, tmp_path, fail_mode):
    upstream.handler = provider_with_usage(3, 2)
    g = GatewayProcess(config(upstream.url, redis_server.url, f"sqlite:///{tmp_path}/s.db",
                              f"  fail_mode: {fail_mode}\n", timeout=0.3))
    try:
        token = create_key(g, rpm_limit=3)["key"]
        assert statuses(burst([g.url], token, 5)) == {200: 3, 429: 2}
        redis_server.kill()
        t0 = time.monotonic()
        down = burst([g.url], token, 5)
        assert time.monotonic() - t0 < 5  # bounded by redis.timeout, never hanging
        if fail_mode == "open":
            assert statuses(down) == {200: 5}
            assert "x-ratelimit-remaining-requests" not in down[0].headers
        else:
            assert statuses(down) == {503: 5}
            assert down[0].error()["code"] == "limits_unavailable"
        assert _redis_errors(g.url) >= 1
        assert "redis limits failed" in g.logs()
        # Redis comes back (empty, on the same port): limits hold again by themselves.
        redis_server.start()
        time.sleep(0.5)  # past redis.retry_interval
        fresh = create_key(g, rpm_limit=2)["key"]
        assert statuses(burst([g.url], fresh, 4)) == {200: 2, 429: 2}
        assert g.proc.poll() is None
    finally:
        g.stop()


def test_a_budget_raced_by_two_instances_is_not_overspent(upstream, pg_dsn, redis_server):
    # Each request reserves its estimate up front (body bytes / 4 prompt tokens + max_tokens)
    # and the upstream reports exactly that usage, so every request costs what it reserved:
    # a budget of 5.5 requests admits exactly 5 over both instances (PostgreSQL store),
    # where checking the spend without an atomic reservation would let all 40 through.
    body = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}],
                       "max_tokens": 5}).encode()
    prompt = len(body) // 4
    one = (prompt + 5) * 1000 / 1e6
    upstream.handler = provider_with_usage(prompt, 5, delay=0.3)
    text = config(upstream.url, redis_server.url, pg_dsn)
    a = GatewayProcess(text)
    b = GatewayProcess(text)
    try:
        key = create_key(a, budget_usd=5.5 * one)
        responses = burst([a.url, b.url], key["key"], 40, max_tokens=5)
        assert statuses(responses) == {200: 5, 429: 35}
        assert next(r for r in responses if r.status == 429).error()["code"] == "insufficient_quota"
        spend = request(a.url, "GET", f"/admin/keys/{key['id']}",
                        headers={"authorization": f"Bearer {MASTER}"}).json()["spend_usd"]
        assert spend == pytest.approx(5 * one)
    finally:
        a.stop()
        b.stop()
