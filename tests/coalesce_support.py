"""Helpers for the cache coalescing tests: a config with the Redis cache backend on a test
upstream, a fresh request body, a burst of identical requests over instances, two instances."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

from gateway import GatewayProcess
from limits_support import MASTER
from rawhttp import RawResponse, post
from upstream_server import UpstreamServer


def config(upstream: str, redis: str, cache_extra: str = "") -> str:
    return f"""
providers:
  - name: local
    type: openai
    base_url: {upstream}/v1
    api_key: sk-test
    models: [gpt-4o-mini]
master_key: {MASTER}
cache:
  backend: redis
  routes:
    /v1/chat/completions: {{ttl: 60}}
{cache_extra}
redis:
  url: {redis}
"""


def body(**over: object) -> dict[str, object]:
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"same {time.monotonic_ns()}"}],
            **over}


def burst(urls: list[str], payload: dict[str, object], n: int = 100) -> list[RawResponse]:
    """``n`` identical requests at once, spread round-robin over ``urls``."""
    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(lambda i: post(urls[i % len(urls)], "/v1/chat/completions", payload,
                                            headers={"authorization": f"Bearer {MASTER}"}), range(n)))


def wait_for_upstream(upstream: UpstreamServer) -> None:
    """Until the upstream has received a request (the owner's), bounded."""
    deadline = time.monotonic() + 5
    while not upstream.requests and time.monotonic() < deadline:
        time.sleep(0.01)
    assert upstream.requests


@contextmanager
def two_instances(config_text: str) -> Iterator[tuple[GatewayProcess, GatewayProcess]]:
    """Two ``fastgw serve`` instances on one config, stopped on the way out."""
    a = GatewayProcess(config_text)
    try:
        b = GatewayProcess(config_text)
    except BaseException:
        a.stop()
        raise
    try:
        yield a, b
    finally:
        a.stop()
        b.stop()
