"""The response cache through a real ``fastgw serve``: hit, miss, bypass, key normalisation,
stream replay in the client's shape, coalescing of identical misses, tenant isolation,
per-model opt-in, zero cost on hits, and the Redis backend shared by two instances."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from gateway import GatewayProcess
from limits_support import ADMIN, MASTER, create_key, provider_with_usage
from rawhttp import RawResponse, post, request

CACHED = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "cache me"}], "temperature": 0}


def config(url: str, extra: str = "") -> str:
    return f"""
providers:
  - name: local
    type: openai
    base_url: {url}/v1
    api_key: sk-test
    models: [gpt-4o-mini, other-model]
master_key: {MASTER}
pricing:
  gpt-4o-mini: {{input: 1000, output: 1000}}
logging:
  flush_interval: 0.1
cache:
  routes:
    /v1/chat/completions: {{ttl: 60, models: [gpt-4o-mini]}}
{extra}"""


@pytest.fixture(scope="module")
def gw(upstream_server) -> Iterator[GatewayProcess]:
    g = GatewayProcess(config(upstream_server.url))
    yield g
    g.stop()


@pytest.fixture
def up(upstream):
    upstream.handler = provider_with_usage(7, 3)
    return upstream


def send(url: str, body: bytes | dict, key: str = MASTER, **headers: str) -> RawResponse:
    return post(url, "/v1/chat/completions", body, headers={"authorization": f"Bearer {key}", **headers})


def unique(**over) -> dict:  # type: ignore[no-untyped-def]
    """A request no other test sends (the module's gateway keeps its cache between tests)."""
    return {**CACHED, "messages": [{"role": "user", "content": f"cache me {time.monotonic_ns()}"}], **over}


def test_miss_then_hit_whatever_the_key_order_and_white_space(gw, up):
    body = unique()
    first = send(gw.url, body)
    assert first.status == 200 and first.headers["x-fastgw-cache"] == "miss"
    second = send(gw.url, body)
    assert second.status == 200 and second.headers["x-fastgw-cache"] == "hit"
    assert second.body == first.body and second.headers["x-fastgw-path"] == "cache"
    reordered = json.dumps(dict(reversed(list(body.items()))), indent=2).encode()
    third = send(gw.url, reordered)
    assert third.headers["x-fastgw-cache"] == "hit" and third.body == first.body
    assert len(up.requests) == 1
    # A different sampling parameter is a different request.
    assert send(gw.url, {**body, "temperature": 1}).headers["x-fastgw-cache"] == "miss"
    assert len(up.requests) == 2


def test_cache_control_no_cache_and_no_store_bypass_the_lookup(gw, up):
    body = unique()
    assert send(gw.url, body).headers["x-fastgw-cache"] == "miss"
    fresh = send(gw.url, body, **{"cache-control": "no-cache"})
    assert fresh.headers["x-fastgw-cache"] == "miss"
    nostore = send(gw.url, body, **{"Cache-Control": "no-store"})
    assert nostore.headers["x-fastgw-cache"] == "miss"
    assert len(up.requests) == 3
    assert send(gw.url, body).headers["x-fastgw-cache"] == "hit"
    # no-store on the first request: nothing was stored.
    other = unique()
    send(gw.url, other, **{"cache-control": "no-store"})
    assert send(gw.url, other).headers["x-fastgw-cache"] == "miss"


def test_a_cached_stream_is_replayed_in_the_clients_shape(gw, up):
    body = unique(stream=True, stream_options={"include_usage": True})
    first = send(gw.url, body)
    assert first.headers["x-fastgw-cache"] == "miss" and b'"usage"' in first.body
    with_usage = send(gw.url, body)
    assert with_usage.headers["x-fastgw-cache"] == "hit"
    assert with_usage.headers["content-type"].startswith("text/event-stream")
    assert with_usage.body == first.body
    plain = {k: v for k, v in body.items() if k != "stream_options"}
    without = send(gw.url, plain)
    assert without.headers["x-fastgw-cache"] == "hit"
    assert b'"usage"' not in without.body and without.body.endswith(b"data: [DONE]\n\n")
    events = [e for e in first.body.split(b"\n\n") if e and b'"usage"' not in e]
    assert without.body == b"\n\n".join(events) + b"\n\n"
    assert len(up.requests) == 1
    # The non-streaming form of the same request is its own entry.
    assert send(gw.url, {**plain, "stream": False}).headers["x-fastgw-cache"] == "miss"


def test_a_stream_stored_without_usage_is_fetched_again_for_a_client_asking_for_it(gw, up):
    plain = unique(stream=True)
    assert send(gw.url, plain).headers["x-fastgw-cache"] == "miss"
    assert send(gw.url, plain).headers["x-fastgw-cache"] == "hit"
    asked = send(gw.url, {**plain, "stream_options": {"include_usage": True}})
    assert asked.headers["x-fastgw-cache"] == "miss" and b'"usage"' in asked.body


def test_100_identical_concurrent_misses_make_one_upstream_call(gw, up):
    up.handler = provider_with_usage(7, 3, delay=0.5)
    body = unique()
    with ThreadPoolExecutor(100) as pool:
        responses = list(pool.map(lambda _: send(gw.url, body), range(100)))
    assert Counter(r.status for r in responses) == {200: 100}
    assert Counter(r.headers["x-fastgw-cache"] for r in responses) == {"miss": 1, "hit": 99}
    assert len({r.body for r in responses}) == 1
    assert len(up.requests) == 1


def test_keys_do_not_read_each_others_answers(gw, up):
    a = create_key(gw, name="a")["key"]
    b = create_key(gw, name="b")["key"]
    body = unique()
    assert send(gw.url, body, key=a).headers["x-fastgw-cache"] == "miss"
    assert send(gw.url, body, key=a).headers["x-fastgw-cache"] == "hit"
    assert send(gw.url, body, key=b).headers["x-fastgw-cache"] == "miss"
    assert send(gw.url, body).headers["x-fastgw-cache"] == "miss"  # the master key is a tenant too
    assert len(up.requests) == 3


def test_only_listed_routes_and_models_are_cached(gw, up):
    body = unique(model="other-model")
    assert "x-fastgw-cache" not in send(gw.url, body).headers
    assert "x-fastgw-cache" not in send(gw.url, body).headers
    resp = post(gw.url, "/v1/embeddings", {"model": "gpt-4o-mini", "input": "x"},
                headers={"authorization": f"Bearer {MASTER}"})
    assert "x-fastgw-cache" not in resp.headers
    assert len(up.requests) == 3


def test_hits_are_logged_and_cost_nothing(gw, up):
    body = unique()
    send(gw.url, body)
    hit = send(gw.url, body)
    rid = hit.headers["x-fastgw-request-id"]
    deadline = time.monotonic() + 5
    entry = None
    while time.monotonic() < deadline:
        resp = request(gw.url, "GET", f"/admin/logs/{rid}", headers=ADMIN)
        if resp.status == 200:
            entry = resp.json()
            break
        time.sleep(0.05)
    assert entry is not None
    assert entry["path"] == "cache" and entry["status"] == 200 and entry["cost_usd"] == 0


def test_errors_are_not_cached(gw, upstream):
    calls = []

    def failing(r):  # type: ignore[no-untyped-def]
        calls.append(1)
        from upstream_server import json_reply

        return json_reply(b'{"error":{"message":"boom","type":"server_error","param":null,"code":null}}', 500)

    upstream.handler = failing
    body = unique()
    assert send(gw.url, body).status == 500
    assert send(gw.url, body).status == 500
    assert len(calls) == 2


def test_redis_backend_is_shared_by_two_instances_and_a_namespace_shares_keys(upstream, redis_server, tmp_path):
    upstream.handler = provider_with_usage(7, 3)
    text = config(upstream.url, f"  backend: redis\n  namespace: team\nredis:\n  url: {redis_server.url}\n"
                                f"store_url: sqlite:///{tmp_path}/shared.db\n")
    a = GatewayProcess(text)
    b = GatewayProcess(text)
    try:
        body = unique()
        assert send(a.url, body).headers["x-fastgw-cache"] == "miss"
        assert send(b.url, body).headers["x-fastgw-cache"] == "hit"
        # cache.namespace: one cache for every key.
        k = create_key(a, name="ns")["key"]
        assert send(b.url, body, key=k).headers["x-fastgw-cache"] == "hit"
        stream = unique(stream=True)
        first = send(a.url, stream)
        again = send(b.url, stream)
        assert again.headers["x-fastgw-cache"] == "hit" and again.body == first.body
        assert len(upstream.requests) == 2
        # Redis gone: every request is a miss served upstream, never an error.
        redis_server.kill()
        results = [send(a.url, body).status for _ in range(3)]
        assert results == [200, 200, 200]
        assert a.proc.poll() is None
    finally:
        a.stop()
        b.stop()


def test_the_in_memory_cache_is_bounded_in_bytes(upstream_server):
    upstream_server.handler = provider_with_usage(7, 3)
    g = GatewayProcess(config(upstream_server.url, "  max_bytes: 1500\n"))
    try:
        bodies = [unique() for _ in range(6)]
        for body in bodies:
            assert send(g.url, body).headers["x-fastgw-cache"] == "miss"
        # Each entry is ~450 bytes: only the last ones still fit.
        assert send(g.url, bodies[-1]).headers["x-fastgw-cache"] == "hit"
        assert send(g.url, bodies[0]).headers["x-fastgw-cache"] == "miss"
    finally:
        g.stop()

