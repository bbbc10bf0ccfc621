"""Balancing, sticky sessions and circuit breakers end to end: a real gateway, the real ``openai``
SDK, two loopback upstreams; breaker state read back from /admin/routes, /ready and /metrics."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest
from gateway import GatewayProcess
from rawhttp import request
from upstream_server import UPSTREAM_JSON, Reply, UpstreamServer, json_reply

HI = [{"role": "user", "content": "hi"}]
MASTER = "sk-master-balance-test"
ADMIN = {"authorization": f"Bearer {MASTER}"}
OK = lambda r: json_reply(UPSTREAM_JSON)  # noqa: E731
BUSY = lambda r: json_reply(b'{"error":{"message":"busy","type":"x","param":null,"code":null}}',  # noqa: E731
                            status=503)


@pytest.fixture(autouse=True)
def reset(a: UpstreamServer, b: UpstreamServer) -> None:
    for server in (a, b):
        server.handler = OK
        server.requests.clear()


@pytest.fixture(scope="module")
def gw(a: UpstreamServer, b: UpstreamServer) -> Iterator[GatewayProcess]:
    quick = "retry: {backoff_base_ms: 1, backoff_max_ms: 5}"
    gateway = GatewayProcess(f"""
master_key: {MASTER}
providers:
  - {{name: a, type: openai, base_url: "{a.url}/v1", api_key: sk-a, models: [m]}}
  - {{name: b, type: openai, base_url: "{b.url}/v1", api_key: sk-b, models: [m]}}
routes:
  weighted: {{targets: [{{model: a/m, weight: 3}}, {{model: b/m, weight: 1}}], strategy: weighted}}
  lif: {{targets: [a/m, b/m], strategy: least_inflight}}
  sticky: {{targets: [a/m, b/m], strategy: weighted, sticky: {{header: x-session-id}}, {quick}}}
  flappy:
    targets: [a/m, b/m]
    {quick}
    breaker: {{consecutive_failures: 2, cooldown_s: 1}}
""")
    yield gateway
    gateway.stop()


@pytest.fixture
def client(gw: GatewayProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=MASTER, max_retries=0)


def served_by(client: openai.OpenAI, model: str, **kw) -> str:
    raw = client.chat.completions.with_raw_response.create(model=model, messages=HI, **kw)
    assert raw.parse().choices[0].message.content == "hi 👋"
    return raw.headers["x-fastgw-provider"]


def test_weighted_route_follows_its_weights_over_real_http(gw, a, b, client):
    got = [served_by(client, "weighted") for _ in range(80)]
    assert (len(a.requests), len(b.requests)) == (got.count("a"), got.count("b"))
    assert 45 <= got.count("a") <= 75  # 3:1 expects 60


def test_least_inflight_sends_most_traffic_to_the_fast_deployment(gw, a, b, client):
    a.handler = lambda r: Reply(chunks=[UPSTREAM_JSON], content_length=True, delay_before_headers=0.4)
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda _: served_by(client, "lif"), range(40)))
    assert got.count("b") >= 30, got


def test_sticky_sessions_hold_and_move_only_when_the_deployment_fails(gw, a, b, client):
    first = {s: served_by(client, "sticky", extra_headers={"x-session-id": s}) for s in ("s1", "s2", "s3", "s4",
                                                                                       "s5", "s6")}
    assert set(first.values()) == {"a", "b"}  # sessions spread
    for s, where in first.items():
        assert all(served_by(client, "sticky", extra_headers={"x-session-id": s}) == where for _ in range(4))
    # x-fastgw-conversation-id is an identity too, and so is the body's "user" field.
    by_conv = served_by(client, "sticky", extra_headers={"x-fastgw-conversation-id": "c-42"})
    assert all(served_by(client, "sticky", extra_headers={"x-fastgw-conversation-id": "c-42"}) == by_conv
               for _ in range(4))
    by_user = served_by(client, "sticky", user="alice")
    assert all(served_by(client, "sticky", user="alice") == by_user for _ in range(4))
    # Its deployment fails: the session is served elsewhere, then comes back.
    s_on_a = next(s for s, where in first.items() if where == "a")
    a.handler = BUSY
    assert served_by(client, "sticky", extra_headers={"x-session-id": s_on_a}) == "b"
    a.handler = OK
    assert served_by(client, "sticky", extra_headers={"x-session-id": s_on_a}) == "a"


def states(gw: GatewayProcess) -> dict[str, str]:
    resp = request(gw.url, "GET", "/admin/routes", headers=ADMIN)
    assert resp.status == 200
    return {d["deployment"]: d["breaker"] for d in resp.json()["routes"]["flappy"]["deployments"]}


def test_flapping_deployment_opens_its_breaker_moves_traffic_and_recovers(gw, a, b, client):
    a.handler = BUSY
    assert [served_by(client, "flappy") for _ in range(2)] == ["b", "b"]
    assert len(a.requests) == 2  # each request tried a first, then b served it
    assert states(gw) == {"a/m": "open", "b/m": "closed"}
    ready = request(gw.url, "GET", "/ready").json()
    assert ready["status"] == "ready" and ready["routes"]["flappy"]["a/m"] == "open"
    assert [served_by(client, "flappy") for _ in range(5)] == ["b"] * 5
    assert len(a.requests) == 2  # the open breaker keeps traffic away
    metrics = request(gw.url, "GET", "/metrics").body.decode()
    assert 'fastgw_breaker_state{route="flappy",deployment="a/m"} 2' in metrics
    assert 'fastgw_route_attempts_total{route="flappy",deployment="a/m",outcome="retry"} 2' in metrics
    assert 'fastgw_route_retries_total{route="flappy"} 2' in metrics
    assert 'fastgw_deployment_ttfb_seconds_count{route="flappy",deployment="b/m"} 7' in metrics
    assert 'fastgw_deployment_inflight{route="flappy",deployment="b/m"} 0' in metrics
    a.handler = OK
    time.sleep(1.1)  # the cool-down ends: the next request probes a
    assert served_by(client, "flappy") == "a"
    assert states(gw) == {"a/m": "closed", "b/m": "closed"}
    assert [served_by(client, "flappy") for _ in range(3)] == ["a"] * 3


def test_admin_routes_needs_the_master_key(gw):
    assert request(gw.url, "GET", "/admin/routes").status == 401
