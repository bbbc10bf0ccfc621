"""Model and provider limits per attempt shared through a real ``redis-server``: two instances
spread one route over two rpm-limited targets as one gateway, and a request waiting on a
concurrency limit is served when another instance frees the slot (the bounded poll)."""

from __future__ import annotations

import threading
import time
from typing import Any

from gateway import GatewayProcess
from limits_support import usage_stream
from rawhttp import RawResponse, post
from upstream_server import UPSTREAM_JSON, Received, Reply, json_reply, sse_reply

MASTER = "sk-master-quota-redis-0123456789"
HI = [{"role": "user", "content": "hi"}]


def config(a: str, b: str, redis_url: str) -> str:
    return f"""
master_key: {MASTER}
providers:
  - {{name: a1, type: openai, base_url: "{a}/v1", api_key: sk-a, models: [m]}}
  - {{name: b1, type: openai, base_url: "{b}/v1", api_key: sk-b, models: [m]}}
  - {{name: slow, type: openai, base_url: "{a}/v1", api_key: sk-a, models: [m]}}
  - {{name: slow2, type: openai, base_url: "{b}/v1", api_key: sk-b, models: [m]}}
routes:
  spread: {{targets: [a1/m, b1/m]}}
  guarded: {{targets: [slow/m, slow2/m], retry: {{backoff_base_ms: 5, backoff_max_ms: 20}}}}
redis:
  url: {redis_url}
  timeout: 3
limits:
  queue_s: 3
  providers:
    a1: {{rpm: 5}}
    b1: {{rpm: 5}}
    slow: {{concurrency: 1}}
    slow2: {{concurrency: 1}}
"""


def chat(url: str, model: str, **over: Any) -> RawResponse:
    return post(url, "/v1/chat/completions", {"model": model, "messages": HI, **over},
                headers={"authorization": f"Bearer {MASTER}"})


def test_two_instances_share_the_targets_limits_and_queue(upstream, b, redis_server):
    a = upstream
    a.handler = b.handler = lambda r: json_reply(UPSTREAM_JSON)
    b.requests.clear()
    text = config(a.url, b.url, redis_server.url)
    one = GatewayProcess(text)
    two = GatewayProcess(text)
    try:
        # Spread: ten requests over both instances fill a1 then b1; the eleventh is refused.
        served = []
        for i in range(10):
            r = chat((one, two)[i % 2].url, "spread")
            assert r.status == 200, r.body
            served.append(r.headers["x-fastgw-provider"])
        assert served == ["a1"] * 5 + ["b1"] * 5
        assert len(a.requests) == 5 and len(b.requests) == 5
        refused = chat(two.url, "spread")
        assert refused.status == 429 and refused.error()["code"] == "provider_rpm_limit"
        assert "retry-after" in refused.headers

        # Queue: one instance holds slow's only slot; the other's request waits and is served
        # once it is freed (it hears of it by polling Redis).
        arrivals: list[float] = []

        def slow(r: Received) -> Reply:
            arrivals.append(time.monotonic())
            reply = json_reply(UPSTREAM_JSON)
            reply.delay_before_headers = 1.0
            return reply

        a.handler = slow
        out: list[RawResponse] = []
        first = threading.Thread(target=lambda: out.append(chat(one.url, "slow/m")))
        first.start()
        deadline = time.monotonic() + 10
        while not arrivals and time.monotonic() < deadline:  # the first holds the slot
            time.sleep(0.02)
        second = chat(two.url, "slow/m")
        first.join(20)
        assert out[0].status == 200 and second.status == 200, second.body
        assert len(arrivals) == 2 and arrivals[1] - arrivals[0] >= 0.9

        # Every counted slot is freed: a stream, and a failed attempt with a fallback.
        a.handler = lambda r: sse_reply(usage_stream(3, 2))
        assert chat(one.url, "slow/m", stream=True).status == 200
        a.handler = lambda r: json_reply(b'{"error":{"message":"busy","type":"server_error"}}', status=503)
        fell_back = chat(two.url, "guarded")
        assert fell_back.status == 200 and fell_back.headers["x-fastgw-provider"] == "slow2"
        a.handler = lambda r: json_reply(UPSTREAM_JSON)
        # A slot left counted would make these wait queue_s and be refused.
        assert chat(one.url, "slow/m").status == 200
        assert chat(two.url, "slow2/m").status == 200
    finally:
        one.stop()
        two.stop()
