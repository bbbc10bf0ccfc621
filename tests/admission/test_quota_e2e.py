"""Model and provider limits per upstream attempt, through a real ``fastgw serve`` and the real
``openai`` SDK: full targets are skipped (spread), a request finding every target full waits for
room within ``limits.queue_s`` and ``limits.queue_max`` (queue) or is refused with a 429 in its
door's envelope, a retry counts only on the target it went to, and every counted slot is freed
once whatever the path (success, stream, upstream error, fallback, client gone, queue left)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import openai
import pytest
from gateway import GatewayProcess
from limits_support import provider_with_usage, usage_stream
from rawhttp import RawResponse, post, request
from upstream_server import UPSTREAM_JSON, Received, Reply, UpstreamServer, json_reply, sse_reply

MASTER = "sk-master-quota-0123456789"
ADMIN = {"authorization": f"Bearer {MASTER}"}
HI = [{"role": "user", "content": "hi"}]


def config(a: str, b: str, queue: str) -> str:
    return f"""
master_key: {MASTER}
providers:
  - {{name: a1, type: openai, base_url: "{a}/v1", api_key: sk-a, models: [m]}}
  - {{name: b1, type: openai, base_url: "{b}/v1", api_key: sk-b, models: [m]}}
  - {{name: a2, type: openai, base_url: "{a}/v1", api_key: sk-a, models: [m]}}
  - {{name: b2, type: openai, base_url: "{b}/v1", api_key: sk-b, models: [m]}}
  - {{name: slow, type: openai, base_url: "{a}/v1", api_key: sk-a, models: [m]}}
  - {{name: slow2, type: openai, base_url: "{b}/v1", api_key: sk-b, models: [m]}}
  - {{name: t, type: openai, base_url: "{a}/v1", api_key: sk-a, models: [m]}}
routes:
  spread: {{targets: [a1/m, b1/m]}}
  retried: {{targets: [a2/m, b2/m], retry: {{backoff_base_ms: 5, backoff_max_ms: 20}}}}
  guarded: {{targets: [slow/m, slow2/m], retry: {{backoff_base_ms: 5, backoff_max_ms: 20}}}}
limits:
{queue}
  providers:
    a1: {{rpm: 5}}
    b1: {{rpm: 5}}
    a2: {{rpm: 50}}
    b2: {{rpm: 70}}
    slow: {{concurrency: 1}}
    slow2: {{concurrency: 1}}
    t: {{tpm: 105}}
"""


@pytest.fixture(autouse=True)
def reset(a: UpstreamServer, b: UpstreamServer) -> None:
    for server in (a, b):
        server.handler = lambda r: json_reply(UPSTREAM_JSON)
        server.requests.clear()


@pytest.fixture(scope="module")
def queued(a: UpstreamServer, b: UpstreamServer) -> Iterator[GatewayProcess]:
    """Waits up to 3 s for room, one request of the worker at a time."""
    g = GatewayProcess(config(a.url, b.url, "  queue_s: 3\n  queue_max: 1"))
    yield g
    g.stop()


@pytest.fixture(scope="module")
def refusing(a: UpstreamServer, b: UpstreamServer) -> Iterator[GatewayProcess]:
    """``queue_s: 0``: a full target set is refused at once."""
    g = GatewayProcess(config(a.url, b.url, "  queue_s: 0"))
    yield g
    g.stop()


def sdk(g: GatewayProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=g.url + "/v1", api_key=MASTER, max_retries=0, timeout=20)


def chat(g: GatewayProcess, model: str, **over: Any) -> RawResponse:
    return post(g.url, "/v1/chat/completions", {"model": model, "messages": HI, **over},
                headers={"authorization": f"Bearer {MASTER}"})


def slow_ok(seconds: float, arrivals: list[float] | None = None) -> Callable[[Received], Reply]:
    """An upstream that answers after ``seconds`` (streams too), noting when each request arrived."""

    def handler(r: Received) -> Reply:
        if arrivals is not None:
            arrivals.append(time.monotonic())
        if b'"stream":true' in r.body.replace(b" ", b""):
            reply = sse_reply(usage_stream(3, 2))
        else:
            reply = json_reply(UPSTREAM_JSON)
        reply.delay_before_headers = seconds
        return reply

    return handler


def in_thread(fn: Callable[[], RawResponse]) -> tuple[threading.Thread, list[RawResponse]]:
    out: list[RawResponse] = []
    t = threading.Thread(target=lambda: out.append(fn()))
    t.start()
    return t, out


def until(check: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Wait for a state of the gateway or upstream (not a time: the machine may be slow)."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def upstream_has(server: UpstreamServer, n: int) -> None:
    """``n`` requests reached the upstream: their limit slots are held."""
    until(lambda: len(server.requests) >= n, f"{n} upstream request(s)")


def waiting(g: GatewayProcess, n: int) -> None:
    until(lambda: metric(g, "fastgw_limit_queue_waiting") == n, f"{n} request(s) waiting")


def log_entry(g: GatewayProcess, rid: str) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while True:
        resp = request(g.url, "GET", f"/admin/logs/{rid}", headers=ADMIN)
        if resp.status == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert resp.status == 200, resp.body
    entry = resp.json()
    return dict(entry.get("entry", entry))


def test_two_targets_with_rpm_5_each_serve_ten_then_refuse_the_eleventh(queued, a, b):
    client = sdk(queued)
    served = []
    for i in range(10):
        raw = client.chat.completions.with_raw_response.create(model="spread", messages=HI)
        served.append(raw.headers["x-fastgw-provider"])
        # A skipped target is not an attempt: each request made one; the header names the skip.
        assert raw.headers["x-fastgw-attempts"] == ("1" if i < 5 else "1, a1/m:provider_rpm_limit")
        assert raw.headers["x-ratelimit-limit-requests"] == "5"
        assert raw.headers["x-ratelimit-remaining-requests"] == str(4 - i % 5)
        if i == 5:
            sixth = raw.headers["x-fastgw-request-id"]
    assert served == ["a1"] * 5 + ["b1"] * 5  # ordered: a1 until its limit is full, then b1
    assert len(a.requests) == 5 and len(b.requests) == 5
    # The 11th: both full, and their windows free long after queue_s: refused at once.
    with pytest.raises(openai.RateLimitError) as exc:
        client.chat.completions.create(model="spread", messages=HI)
    err = exc.value
    assert err.code == "provider_rpm_limit" and err.body["type"] == "rate_limit_exceeded"
    assert "5 requests per minute" in err.message
    assert 1 <= int(err.response.headers["retry-after"]) <= 61
    assert err.response.headers["x-ratelimit-remaining-requests"] == "0"
    assert err.response.headers["x-fastgw-attempts"] == "0, a1/m:provider_rpm_limit, b1/m:provider_rpm_limit"
    assert len(a.requests) == 5 and len(b.requests) == 5  # never sent upstream
    # The log shows the skip; the skipped target's breaker saw nothing wrong.
    assert log_entry(queued, sixth)["attempts"] == "a1/m:provider_rpm_limit b1/m:200"
    routes = request(queued.url, "GET", "/admin/routes", headers=ADMIN).json()["routes"]
    assert {d["deployment"]: d["breaker"] for d in routes["spread"]["deployments"]} == {
        "a1/m": "closed", "b1/m": "closed"}
    metrics = request(queued.url, "GET", "/metrics").body.decode()
    assert 'fastgw_route_attempts_total{route="spread",deployment="a1/m",outcome="limited"} 6' in metrics
    assert 'fastgw_route_attempts_total{route="spread",deployment="b1/m",outcome="limited"} 1' in metrics
    assert 'fastgw_route_attempts_total{route="spread",deployment="a1/m",outcome="ok"} 5' in metrics


def test_a_second_concurrent_request_waits_for_the_slot_then_succeeds(queued, a):
    arrivals: list[float] = []
    a.handler = slow_ok(1.0, arrivals)
    first, out1 = in_thread(lambda: chat(queued, "slow/m"))
    upstream_has(a, 1)
    # The second through the Anthropic door: the same limits, the same queue.
    second = post(queued.url, "/v1/messages", {"model": "slow/m", "max_tokens": 5, "messages": HI},
                  headers={"x-api-key": MASTER})
    first.join(20)
    assert out1[0].status == 200, out1[0].body
    assert second.status == 200, second.body
    assert second.json()["type"] == "message"
    # It went upstream only once the first had answered (concurrency 1).
    assert len(arrivals) == 2 and arrivals[1] - arrivals[0] >= 0.9


def test_queue_s_0_refuses_at_once_in_the_clients_envelope(refusing, a):
    a.handler = slow_ok(1.0)
    first, out1 = in_thread(lambda: chat(refusing, "slow/m"))
    upstream_has(a, 1)
    second = chat(refusing, "slow/m")
    third = post(refusing.url, "/v1/messages", {"model": "slow/m", "max_tokens": 5, "messages": HI},
                 headers={"x-api-key": MASTER})
    first.join(20)
    assert out1[0].status == 200
    assert second.status == 429 and second.headers["retry-after"] == "1"
    err = second.error()
    assert err["code"] == "provider_concurrency_limit" and "1 requests in flight" in err["message"]
    assert third.status == 429 and "retry-after" in third.headers
    assert third.headers["x-fastgw-attempts"] == "0, slow/m:provider_concurrency_limit"
    body = third.json()
    assert body["type"] == "error" and body["error"]["type"] == "rate_limit_error"
    assert len(a.requests) == 1


def test_queue_max_bounds_how_many_wait(queued, a):
    before = {o: metric(queued, f'fastgw_limit_queue_total{{outcome="{o}"}}') for o in ("waited", "full", "refused")}
    a.handler = slow_ok(1.0)
    first, out1 = in_thread(lambda: chat(queued, "slow/m"))
    upstream_has(a, 1)
    second, out2 = in_thread(lambda: chat(queued, "slow/m"))
    waiting(queued, 1)
    third = chat(queued, "slow/m")  # queue_max 1: one waits already
    first.join(20)
    second.join(20)
    assert third.status == 429 and third.error()["code"] == "provider_concurrency_limit"
    assert out1[0].status == 200 and out2[0].status == 200
    assert len(a.requests) == 2
    after = {o: metric(queued, f'fastgw_limit_queue_total{{outcome="{o}"}}') for o in ("waited", "full", "refused")}
    assert {o: after[o] - before[o] for o in after} == {"waited": 1, "full": 1, "refused": 1}
    assert metric(queued, "fastgw_limit_queue_waiting") == 0


def test_a_retry_counts_only_on_the_target_it_went_to(queued, a, b):
    left = [503]

    def flaky(r: Received) -> Reply:
        if left:
            left.pop()
            return json_reply(b'{"error":{"message":"busy","type":"server_error","param":null,"code":null}}',
                              status=503)
        return json_reply(UPSTREAM_JSON)

    a.handler = flaky
    client = sdk(queued)
    raw = client.chat.completions.with_raw_response.create(model="retried", messages=HI)
    assert raw.headers["x-fastgw-provider"] == "b2" and raw.headers["x-fastgw-attempts"] == "2"
    # The answer's limits are those of the target that served it.
    assert raw.headers["x-ratelimit-limit-requests"] == "70"
    assert raw.headers["x-ratelimit-remaining-requests"] == "69"
    assert log_entry(queued, raw.headers["x-fastgw-request-id"])["attempts"] == "a2/m:503 b2/m:200"
    # a2 counted its one attempt (it was sent), b2 its one; nothing else.
    direct_a = client.chat.completions.with_raw_response.create(model="a2/m", messages=HI)
    assert direct_a.headers["x-ratelimit-limit-requests"] == "50"
    assert direct_a.headers["x-ratelimit-remaining-requests"] == "48"
    direct_b = client.chat.completions.with_raw_response.create(model="b2/m", messages=HI)
    assert direct_b.headers["x-ratelimit-remaining-requests"] == "68"


def admitted(g: GatewayProcess, model: str = "slow/m", wait: float = 0.0) -> bool:
    """A request under concurrency 1 and queue_s 0 is admitted: no slot was left counted."""
    deadline = time.monotonic() + wait
    while True:
        r = chat(g, model)
        if r.status == 200 or time.monotonic() >= deadline:
            return r.status == 200
        time.sleep(0.2)


def test_settling_frees_exactly_the_counted_slots(refusing, a, b):
    client = sdk(refusing)
    client.chat.completions.create(model="slow/m", messages=HI)
    assert admitted(refusing)
    a.handler = slow_ok(0.0)
    assert "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model="slow/m", messages=HI, stream=True) if c.choices) == "ok"
    assert admitted(refusing)
    # An upstream error on a plain model: relayed, its slot freed.
    a.handler = lambda r: json_reply(b'{"error":{"message":"boom","type":"server_error"}}', status=500)
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="slow/m", messages=HI)
    # A failed attempt then a fallback: both targets' slots freed.
    a.handler = lambda r: json_reply(b'{"error":{"message":"busy","type":"server_error"}}', status=503)
    raw = client.chat.completions.with_raw_response.create(model="guarded", messages=HI)
    assert raw.headers["x-fastgw-provider"] == "slow2"
    a.handler = lambda r: json_reply(UPSTREAM_JSON)
    assert admitted(refusing) and admitted(refusing, "slow2/m")
    # A client that leaves mid-stream.
    a.handler = lambda r: sse_reply(usage_stream(3, 2), interval=0.5)
    sock = socket.create_connection(("127.0.0.1", refusing.port), timeout=5)
    body = b'{"model":"slow/m","stream":true,"messages":[{"role":"user","content":"hi"}]}'
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer " + MASTER.encode()
                 + b"\r\ncontent-length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    seen = b""
    while b"data: " not in seen:
        chunk = sock.recv(65536)
        assert chunk, seen
        seen += chunk
    sock.close()
    a.handler = lambda r: json_reply(UPSTREAM_JSON)
    assert admitted(refusing, wait=5.0)
    # Still exactly one in flight at a time: nothing was freed twice.
    a.handler = slow_ok(1.0)
    a.requests.clear()
    first, out1 = in_thread(lambda: chat(refusing, "slow/m"))
    upstream_has(a, 1)
    assert chat(refusing, "slow/m").status == 429
    first.join(20)
    assert out1[0].status == 200


def test_a_client_leaving_the_queue_frees_its_place(queued, a):
    a.handler = slow_ok(2.0)
    first, out1 = in_thread(lambda: chat(queued, "slow/m"))
    upstream_has(a, 1)
    body = b'{"model":"slow/m","messages":[{"role":"user","content":"hi"}]}'
    sock = socket.create_connection(("127.0.0.1", queued.port), timeout=5)
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer " + MASTER.encode()
                 + b"\r\ncontent-length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    waiting(queued, 1)
    sock.close()  # it waits in the queue (queue_max 1) and leaves
    waiting(queued, 0)
    third = chat(queued, "slow/m")  # the queue's one place is free again: it waits and is served
    first.join(20)
    assert out1[0].status == 200
    assert third.status == 200, third.body
    assert len(a.requests) == 2  # the one that left never went upstream


def metric(g: GatewayProcess, line: str) -> float:
    for row in request(g.url, "GET", "/metrics").body.decode().splitlines():
        if row.startswith(line + " "):
            return float(row.split()[-1])
    return 0.0


def test_a_targets_tokens_are_corrected_from_real_usage_and_a_failed_attempt_gives_them_back(queued, a):
    # Each request is estimated at its body / 4 but really uses 40 tokens; the failed one used none.
    a.handler = lambda r: json_reply(b'{"error":{"message":"boom","type":"server_error"}}', status=500)
    assert chat(queued, "t/m").status == 500
    time.sleep(0.1)  # settling happens once the answer went out
    a.handler = provider_with_usage(15, 25)
    results, remaining = [], []
    for _ in range(4):
        r = chat(queued, "t/m")
        results.append(r.status)
        if r.status == 200:
            assert r.headers["x-ratelimit-limit-tokens"] == "105"
            remaining.append(int(r.headers["x-ratelimit-remaining-tokens"]))
        else:
            assert r.error()["code"] == "provider_tpm_limit"
        time.sleep(0.1)
    estimate = 105 - remaining[0]  # the failed request's estimate was given back
    assert remaining[1] == 105 - 40 - estimate and remaining[2] == 105 - 80 - estimate
    assert results == [200, 200, 200, 429]

