"""The coalescing lock across instances through real HTTP and a real ``redis-server``: an
answer slower than ``cache.coalesce_lock_s`` still makes one upstream call (the owner refreshes
its lock), a SIGKILLed owner releases the waiters at lock expiry (nothing refreshes a dead
process's lock), an owner whose client left releases its lock at once, and
``fastgw_cache_coalesce_wakeups_total`` on ``/metrics``."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from coalesce_support import body, burst, config, two_instances, wait_for_upstream
from limits_support import MASTER, provider_with_usage
from rawhttp import request

from fastgw.config import ConfigError, parse_config

AUTH = {"authorization": f"Bearer {MASTER}"}


def wakeups(url: str) -> dict[str, float]:
    """``fastgw_cache_coalesce_wakeups_total`` by source, from the instance's /metrics."""
    text = request(url, "GET", "/metrics").body.decode()
    found = re.findall(r'^fastgw_cache_coalesce_wakeups_total\{source="(\w+)"\} (\S+)$', text, re.M)
    return {source: float(value) for source, value in found}


def lock_keys(redis_server) -> int:  # type: ignore[no-untyped-def]
    """How many coalescing locks Redis holds now."""
    reply = redis_server.command(b"KEYS", b"fastgw:cache-lock:*")
    assert reply is not None and reply.startswith(b"*"), reply
    return int(reply[1:])


def test_an_answer_slower_than_the_lock_ttl_makes_one_upstream_call(upstream, redis_server):
    # The lock lives 1.5 s, the upstream answers after 4 s: only the owner's refreshes keep
    # the other instance's waiters waiting and late arrivals from taking the lock.
    upstream.handler = provider_with_usage(7, 3, delay=4.0)
    text = config(upstream.url, redis_server.url, "  coalesce_lock_s: 1.5")
    with two_instances(text) as (a, b):
        payload = body()
        with ThreadPoolExecutor(2) as pool:
            first = pool.submit(burst, [a.url, b.url], payload, 20)
            wait_for_upstream(upstream)
            time.sleep(2.5)  # past the lock's first TTL, the owner still fetching
            late = pool.submit(burst, [a.url, b.url], payload, 10)
            responses = first.result(30) + late.result(30)
        assert Counter(r.status for r in responses) == {200: 30}
        assert Counter(r.headers["x-fastgw-cache"] for r in responses) == {"miss": 1, "hit": 29}
        assert len(upstream.requests) == 1
        # The owner's instance waited on nobody; the other one's waiter was released once.
        counts = sorted(sum(wakeups(g.url).values()) for g in (a, b))
        assert counts == [0, 1], counts
        assert lock_keys(redis_server) == 0


def test_a_killed_owner_releases_the_waiters_at_lock_expiry(upstream, redis_server):
    # Waiters would wait coalesce_wait_s (30 s); the dead owner's lock expires after 1 s.
    upstream.handler = provider_with_usage(7, 3, delay=3.0)
    text = config(upstream.url, redis_server.url, "  coalesce_lock_s: 1\n  coalesce_wait_s: 30")
    with two_instances(text) as (a, b):
        payload = body()
        with ThreadPoolExecutor(2) as pool:
            pool.submit(request, a.url, "POST", "/v1/chat/completions", payload, AUTH)
            wait_for_upstream(upstream)
            waiting = pool.submit(burst, [b.url], payload, 5)
            time.sleep(0.5)  # the waiters are waiting on a's lock
            os.killpg(a.proc.pid, signal.SIGKILL)
            killed = time.monotonic()
            responses = waiting.result(30)
            elapsed = time.monotonic() - killed
        assert Counter(r.status for r in responses) == {200: 5}
        assert Counter(r.headers["x-fastgw-cache"] for r in responses) == {"miss": 1, "hit": 4}
        # The lock's expiry (1 s) and b's own upstream call (3 s), far below the 30 s wait.
        assert elapsed < 15, elapsed
        assert len(upstream.requests) == 2
        # No publication from a dead process: b's waiter found the lock gone by its poll.
        assert wakeups(b.url) == {"poll": 1.0}


def test_an_owner_whose_client_left_releases_its_lock_at_once(upstream, redis_server):
    upstream.handler = provider_with_usage(7, 3, delay=3.0)
    # A lock that would outlive the test: only the owner's release removes it.
    text = config(upstream.url, redis_server.url, "  coalesce_lock_s: 60")
    with two_instances(text) as (a, b):
        payload = json.dumps(body()).encode()
        with socket.create_connection(("127.0.0.1", a.port), timeout=5) as sock:
            sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                         b"authorization: Bearer %s\r\ncontent-length: %d\r\n\r\n%s"
                         % (MASTER.encode(), len(payload), payload))
            wait_for_upstream(upstream)
            assert lock_keys(redis_server) == 1
        deadline = time.monotonic() + 10
        while lock_keys(redis_server) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert lock_keys(redis_server) == 0
        # The next identical request, on the other instance, goes upstream itself.
        again = request(b.url, "POST", "/v1/chat/completions", payload, AUTH)
        assert again.status == 200 and again.headers["x-fastgw-cache"] == "miss"
        assert len(upstream.requests) == 2


def test_a_non_positive_coalesce_lock_is_refused_with_its_path():
    for value in ("0", "-1"):
        try:
            parse_config(config("http://127.0.0.1:9", "redis://127.0.0.1:9/0", f"  coalesce_lock_s: {value}"))
        except ConfigError as exc:
            assert "cache.coalesce_lock_s: expected a number > 0" in str(exc)
        else:
            raise AssertionError(f"coalesce_lock_s: {value} accepted")
