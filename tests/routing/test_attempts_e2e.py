"""The attempt loop end to end: a real gateway, the real ``openai`` SDK, loopback upstreams that
misbehave on command (503 then 200, 429 with retry-after, refused connections, 404, a stream that
breaks after its first byte, every target down)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import openai
import pytest
from chat_stream import events
from gateway import GatewayProcess, free_port
from rawhttp import post, request
from upstream_server import UPSTREAM_JSON, Reply, UpstreamServer, json_reply, sse_events, sse_reply

from bench.wire import anthropic_sse

HI = [{"role": "user", "content": "hi"}]
MASTER = "sk-master-routing-test"
ADMIN = {"authorization": f"Bearer {MASTER}"}
OK = lambda r: json_reply(UPSTREAM_JSON)  # noqa: E731


@pytest.fixture(autouse=True)
def reset(a: UpstreamServer, b: UpstreamServer) -> None:
    for server in (a, b):
        server.handler = OK
        server.requests.clear()


@pytest.fixture(scope="module")
def gw(a: UpstreamServer, b: UpstreamServer) -> Iterator[GatewayProcess]:
    dead = free_port()  # nothing listens: connections are refused
    quick = "retry: {backoff_base_ms: 5, backoff_max_ms: 20}"
    gateway = GatewayProcess(f"""
master_key: {MASTER}
providers:
  - {{name: a, type: openai, base_url: "{a.url}/v1", api_key: sk-a, models: [m]}}
  - {{name: b, type: openai, base_url: "{b.url}/v1", api_key: sk-b, models: [m]}}
  - {{name: dead, type: openai, base_url: "http://127.0.0.1:{dead}/v1", api_key: sk-d, models: [m]}}
  - {{name: claude, type: anthropic, base_url: "{b.url}", api_key: k-anthropic, models: [claude-haiku-4-5]}}
aliases:
  pair: [a/m, b/m]
routes:
  one: {{targets: [a/m], {quick}}}
  wait-one: {{targets: [a/m], deadline_s: 10}}
  short-one: {{targets: [a/m], deadline_s: 0.5}}
  short-two: {{targets: [a/m, b/m], deadline_s: 0.5}}
  two: {{targets: [a/m, b/m], {quick}}}
  cross: {{targets: [dead/m, claude/claude-haiku-4-5], {quick}}}
  down: {{targets: [dead/m, dead/m2], {quick}, breaker: {{consecutive_failures: 1, cooldown_s: 30}}}}
  no-retry: {{targets: [a/m, b/m], retry: {{attempts: 0}}}}
  only-503: {{targets: [a/m, b/m], {quick}, fallback_on: [], retry: {{on_status: [503], backoff_base_ms: 5}}}}
""")
    yield gateway
    gateway.stop()


@pytest.fixture
def client(gw: GatewayProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=MASTER, max_retries=0)


def flaky(statuses: list[int], headers: list[tuple[str, str]] | None = None):
    """A handler answering the given statuses in turn, then 200 forever."""
    left = list(statuses)

    def handler(r):
        if left:
            status = left.pop(0)
            return json_reply(b'{"error":{"message":"busy","type":"server_error","param":null,"code":null}}',
                              status=status, headers=headers)
        return json_reply(UPSTREAM_JSON)

    return handler


def test_503_then_200_is_retried_once(gw, a, b, client):
    a.handler = flaky([503])
    raw = client.chat.completions.with_raw_response.create(model="one", messages=HI)
    assert raw.parse().choices[0].message.content == "hi 👋"
    assert len(a.requests) == 2
    assert raw.headers["x-fastgw-attempts"] == "2"
    assert raw.headers["x-fastgw-provider"] == "a"
    assert raw.headers["x-fastgw-model"] == "m"
    assert b'"model":"m"' in a.requests[0].body and a.requests[0].body == a.requests[1].body
    rid = raw.headers["x-fastgw-request-id"]
    deadline = time.monotonic() + 10
    while True:
        resp = request(gw.url, "GET", f"/admin/logs/{rid}", headers=ADMIN)
        if resp.status == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    entry = resp.json()
    entry = entry.get("entry", entry)
    assert entry["attempts"] == "a/m:503 a/m:200" and entry["status"] == 200


def test_plain_model_is_not_retried(gw, a, client):
    a.handler = flaky([503])
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="a/m", messages=HI)
    assert len(a.requests) == 1


def test_retry_count_is_enforced(gw, a, b, client):
    a.handler = b.handler = flaky([503] * 5)
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="no-retry", messages=HI)
    assert len(a.requests) + len(b.requests) == 1


def test_429_retry_after_is_waited_when_it_fits(gw, a, client):
    a.handler = flaky([429], headers=[("retry-after", "1")])
    t0 = time.monotonic()
    raw = client.chat.completions.with_raw_response.create(model="wait-one", messages=HI)
    waited = time.monotonic() - t0
    assert raw.parse().choices[0].message.content == "hi 👋"
    assert len(a.requests) == 2 and waited >= 0.95
    assert raw.headers["x-fastgw-attempts"] == "2"
    # The wait was the upstream's asking, not time spent in the gateway.
    assert float(raw.headers["x-fastgw-overhead-ms"]) < 500


def test_429_retry_after_past_the_deadline_is_answered_at_once(gw, a, client):
    a.handler = flaky([429], headers=[("retry-after", "1")])
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(model="short-one", messages=HI)
    assert info.value.response.headers["retry-after"] == "1"
    assert len(a.requests) == 1


def test_the_deadline_cuts_an_attempt_waiting_for_headers(gw, a, b):
    a.handler = lambda r: Reply(chunks=[UPSTREAM_JSON], content_length=True, delay_before_headers=3)
    t0 = time.monotonic()
    resp = post(gw.url, "/v1/chat/completions", {"model": "short-two", "messages": HI}, headers=ADMIN)
    assert time.monotonic() - t0 < 2.5
    assert resp.status == 504 and resp.error()["code"] == "deadline_exceeded"
    assert "'short-two'" in resp.error()["message"]
    assert len(b.requests) == 0  # no time was left for the next target


def test_429_retry_after_past_the_deadline_moves_to_the_next_target(gw, a, b, client):
    a.handler = flaky([429], headers=[("retry-after", "1")])
    raw = client.chat.completions.with_raw_response.create(model="short-two", messages=HI)
    assert raw.parse().choices[0].message.content == "hi 👋"
    assert (len(a.requests), len(b.requests)) == (1, 1)
    assert raw.headers["x-fastgw-provider"] == "b"


def test_404_falls_back_to_the_next_target_of_an_alias(gw, a, b, client):
    a.handler = lambda r: json_reply(b'{"error":{"message":"no such model","type":"invalid_request_error",'
                                     b'"param":"model","code":"model_not_found"}}', status=404)
    raw = client.chat.completions.with_raw_response.create(model="pair", messages=HI)
    assert raw.parse().choices[0].message.content == "hi 👋"
    assert raw.headers["x-fastgw-provider"] == "b" and raw.headers["x-fastgw-attempts"] == "2"


def test_context_length_falls_back_but_other_400s_do_not(gw, a, b, client):
    too_long = b'{"error":{"message":"too long","type":"invalid_request_error","param":"messages",' \
               b'"code":"context_length_exceeded"}}'
    a.handler = lambda r: json_reply(too_long, status=400)
    assert client.chat.completions.create(model="two", messages=HI).choices[0].message.content == "hi 👋"
    assert len(b.requests) == 1
    b.requests.clear()
    a.handler = lambda r: json_reply(b'{"error":{"message":"bad","type":"invalid_request_error",'
                                     b'"param":"temperature","code":null}}', status=400)
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="two", messages=HI)
    assert info.value.body["param"] == "temperature"
    assert len(b.requests) == 0


def test_fallback_on_is_enforced(gw, a, b, client):
    """Without 404 in fallback_on the 404 is the answer."""
    a.handler = lambda r: json_reply(b'{"error":{"message":"no","type":"x","param":null,"code":null}}', status=404)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="only-503", messages=HI)
    assert len(b.requests) == 0


def test_retry_on_status_is_enforced(gw, a, b, client):
    a.handler = flaky([503])
    assert client.chat.completions.create(model="only-503", messages=HI).choices[0].message.content == "hi 👋"
    assert (len(a.requests), len(b.requests)) == (1, 1)
    a.requests.clear()
    b.requests.clear()
    a.handler = flaky([500])  # not in this route's on_status: answered as is
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(model="only-503", messages=HI)
    assert info.value.status_code == 500
    assert (len(a.requests), len(b.requests)) == (1, 0)


def test_refused_primary_falls_back_across_formats_streaming(gw, b, client):
    b.handler = lambda r: sse_reply(anthropic_sse([("text", "Hello from Claude")]))
    stream = client.chat.completions.with_raw_response.create(model="cross", messages=HI, stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in stream.parse() if c.choices)
    assert text == "Hello from Claude"
    assert stream.headers["x-fastgw-provider"] == "claude"
    assert stream.headers["x-fastgw-model"] == "claude-haiku-4-5"
    assert stream.headers["x-fastgw-attempts"] == "2"
    assert b.requests[0].target == "/v1/messages"


def test_stream_failing_after_first_byte_is_not_retried(gw, a, b):
    a.handler = lambda r: Reply(headers=[("content-type", "text/event-stream")],
                                chunks=[p + b"\n\n" for p in sse_events(5).split(b"\n\n") if p], drop_after=2)
    resp = post(gw.url, "/v1/chat/completions", {"model": "two", "messages": HI, "stream": True}, headers=ADMIN)
    assert resp.status == 200
    got = events(resp.body)
    assert len(got) == 3 and "error" in got[-1] and "[DONE]" not in got
    assert resp.body.count(b'"error"') == 1
    assert (len(a.requests), len(b.requests)) == (1, 0)


def test_every_target_down_is_one_503_naming_the_model(gw, client):
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(model="down", messages=HI)
    first = info.value
    assert first.status_code == 503 and "'down'" in first.message
    assert first.response.headers["x-fastgw-attempts"] == "2"
    # Both breakers are open now: the next request is refused at once, before any connect.
    t0 = time.monotonic()
    resp = post(gw.url, "/v1/chat/completions", {"model": "down", "messages": HI}, headers=ADMIN)
    assert resp.status == 503
    err = resp.error()
    assert err["code"] == "model_unavailable" and "'down'" in err["message"]
    assert int(resp.headers["retry-after"]) >= 1
    assert resp.headers["x-fastgw-attempts"] == "0"  # no upstream was tried
    assert time.monotonic() - t0 < 5


def test_plain_models_say_who_served_them(gw, a):
    resp = post(gw.url, "/v1/chat/completions", {"model": "a/m", "messages": HI}, headers=ADMIN)
    assert resp.status == 200 and resp.body == UPSTREAM_JSON
    assert resp.headers["x-fastgw-attempts"] == "1" and resp.headers["x-fastgw-model"] == "m"
    assert request(gw.url, "GET", "/ready").status == 200
    ids = {m["id"] for m in request(gw.url, "GET", "/v1/models", headers=ADMIN).json()["data"]}
    assert {"one", "two", "cross", "pair"} <= ids  # routes and aliases are model names clients may send
