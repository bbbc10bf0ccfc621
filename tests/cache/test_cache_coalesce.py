"""Identical cache misses coalesced across workers and instances through a real ``redis-server``:
one upstream call for 100 requests over two instances or two workers, an owner's failure
releasing the waiters at once, Redis killed mid-burst, and ``cache.coalesce_wait_s``."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from coalesce_support import body, burst, config, two_instances, wait_for_upstream
from gateway import GatewayProcess
from limits_support import MASTER, provider_with_usage
from rawhttp import post, request
from upstream_server import Received, Reply, json_reply

from fastgw.config import ConfigError, parse_config

SLOW = 0.3


@pytest.fixture
def pair(upstream, redis_server, tmp_path) -> Iterator[tuple[GatewayProcess, GatewayProcess]]:  # type: ignore[no-untyped-def]
    text = config(upstream.url, redis_server.url) + f"store_url: sqlite:///{tmp_path}/shared.db\n"
    with two_instances(text) as both:
        yield both


def test_100_identical_requests_over_two_instances_make_one_upstream_call(upstream, pair):
    upstream.handler = provider_with_usage(7, 3, delay=SLOW)
    a, b = pair
    responses = burst([a.url, b.url], body())
    assert Counter(r.status for r in responses) == {200: 100}
    assert Counter(r.headers["x-fastgw-cache"] for r in responses) == {"miss": 1, "hit": 99}
    assert len({r.body for r in responses}) == 1
    assert len(upstream.requests) == 1
    # A stream waits for the stored answer and gets its replay, like a hit.
    stream = body(stream=True)
    responses = burst([a.url, b.url], stream, 20)
    assert Counter(r.headers["x-fastgw-cache"] for r in responses) == {"miss": 1, "hit": 19}
    assert len({r.body for r in responses}) == 1 and responses[0].body.endswith(b"data: [DONE]\n\n")
    assert len(upstream.requests) == 2


def test_100_identical_requests_over_two_workers_make_one_upstream_call(upstream, redis_server):
    upstream.handler = provider_with_usage(7, 3, delay=SLOW)
    g = GatewayProcess(config(upstream.url, redis_server.url), workers=2)
    try:
        # Bursts until one was served by both workers (each has its own request-id prefix); bounded.
        for round_ in range(1, 11):
            responses = burst([g.url], body())
            assert Counter(r.status for r in responses) == {200: 100}
            assert Counter(r.headers["x-fastgw-cache"] for r in responses) == {"miss": 1, "hit": 99}
            assert len(upstream.requests) == round_
            if len({r.headers["x-fastgw-request-id"][:-8] for r in responses}) == 2:
                break
        else:
            pytest.fail("no burst reached both workers")
    finally:
        g.stop()


def test_an_owner_failure_releases_the_waiters_at_once(upstream, redis_server, tmp_path):
    calls: list[int] = []
    lock = threading.Lock()

    def first_fails(r: Received) -> Reply:
        with lock:
            calls.append(1)
            first = len(calls) == 1
        if first:
            reply = json_reply(b'{"error":{"message":"boom","type":"server_error","param":null,"code":null}}', 500)
        else:
            reply = provider_with_usage(7, 3)(r)
        reply.delay_before_headers = SLOW
        return reply

    upstream.handler = first_fails
    # Waiters would wait 30 s for an owner that does not tell them.
    text = config(upstream.url, redis_server.url, "  coalesce_wait_s: 30")
    with two_instances(text) as (a, b):
        payload = body()
        started = time.monotonic()
        with ThreadPoolExecutor(1) as pool:
            owner = pool.submit(post, a.url, "/v1/chat/completions", payload,
                                headers={"authorization": f"Bearer {MASTER}"})
            wait_for_upstream(upstream)
            waiters = burst([b.url], payload, 19)
            assert owner.result(10).status == 500
        elapsed = time.monotonic() - started
        assert Counter(r.status for r in waiters) == {200: 19}
        assert Counter(r.headers["x-fastgw-cache"] for r in waiters) == {"miss": 1, "hit": 18}
        assert elapsed < 15, elapsed
        assert len(calls) == 2


def test_redis_killed_mid_burst_requests_still_succeed(upstream, redis_server, pair):
    upstream.handler = provider_with_usage(7, 3, delay=SLOW)
    a, b = pair
    payload = body()
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(burst, [a.url, b.url], payload, 60)
        time.sleep(SLOW / 2)
        redis_server.kill()
        responses = running.result(60)
    assert Counter(r.status for r in responses) == {200: 60}
    after = burst([a.url, b.url], body(), 10)
    assert Counter(r.status for r in after) == {200: 10}
    assert a.proc.poll() is None and b.proc.poll() is None
    # Counted like every Redis failure.
    scraped = [request(g.url, "GET", "/metrics").body.decode() for g in (a, b)]
    assert all('fastgw_redis_errors_total{op="cache_' in text for text in scraped), scraped
    # Per worker, misses are still coalesced: at most one upstream call per instance and burst.
    assert 2 <= len(upstream.requests) <= 4


@pytest.mark.parametrize(("wait", "calls"), [("0", 2), ("0.2", 2), ("30", 1)])
def test_coalesce_wait_s_bounds_the_wait_for_another_instance(upstream, redis_server, wait, calls):
    # The upstream answers after 1.5 s: a waiter giving up after 0.2 s goes upstream itself,
    # and 0 leaves coalescing to each instance.
    upstream.handler = provider_with_usage(7, 3, delay=1.5)
    text = config(upstream.url, redis_server.url, f"  coalesce_wait_s: {wait}")
    with two_instances(text) as (a, b):
        responses = burst([a.url, b.url], body(), 10)
        assert Counter(r.status for r in responses) == {200: 10}
        assert len(upstream.requests) == calls


def test_an_owner_killed_mid_request_holds_the_others_for_coalesce_wait_s_at_most(upstream, redis_server):
    upstream.handler = provider_with_usage(7, 3, delay=3.0)
    text = config(upstream.url, redis_server.url, "  coalesce_wait_s: 1")
    with two_instances(text) as (a, b):
        payload = body()
        with ThreadPoolExecutor(1) as pool:
            owner = pool.submit(post, a.url, "/v1/chat/completions", payload,
                                headers={"authorization": f"Bearer {MASTER}"})
            wait_for_upstream(upstream)
            os.killpg(a.proc.pid, signal.SIGKILL)
            waiter = post(b.url, "/v1/chat/completions", payload, headers={"authorization": f"Bearer {MASTER}"})
            assert waiter.status == 200 and waiter.headers["x-fastgw-cache"] == "miss"
            assert len(upstream.requests) == 2
            with contextlib.suppress(Exception):  # the killed instance's client sees its connection drop
                owner.result(10)


def test_a_negative_coalesce_wait_is_refused_with_its_path():
    with pytest.raises(ConfigError, match=r"cache.coalesce_wait_s: expected a number >= 0"):
        parse_config(config("http://127.0.0.1:9", "redis://127.0.0.1:9/0", "  coalesce_wait_s: -1"))
