"""The Anthropic front door (/v1/messages) to an Anthropic provider: a real gateway process, the
real ``anthropic`` SDK (or raw HTTP for byte-level checks) as the client, the test upstream
speaking Anthropic's exact wire format (:mod:`bench.wire`)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator

import anthropic
import pytest
from gateway import GatewayProcess
from rawhttp import post, request
from upstream_server import Reply, UpstreamServer, json_reply, sse_reply

from bench.wire import anthropic_error, anthropic_json, anthropic_sse, anthropic_sse_events

CLAUDE = "claude-haiku-4-5"
MASTER = "sk-master-messages"
HI = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def mgw(upstream_server: UpstreamServer) -> Iterator[GatewayProcess]:
    gw = GatewayProcess(f"""
master_key: {MASTER}
providers:
  - name: claude
    type: anthropic
    base_url: {upstream_server.url}
    api_key: k-anthropic
    models: [{CLAUDE}, claude-sonnet-4-5]
  - name: flaky
    type: anthropic
    base_url: {upstream_server.url}
    api_key: k-flaky
    models: [claude-flaky]
aliases:
  sonnet: claude/claude-sonnet-4-5
logging: {{flush_interval: 0.1}}
pricing:
  claude-haiku-4-5: {{input: 1.0, output: 5.0, cached_input: 0.1, cache_write_input: 1.25}}
""")
    yield gw
    gw.stop()


@pytest.fixture
def client(mgw: GatewayProcess) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=mgw.url, api_key=MASTER, max_retries=0)


def _events(body: bytes) -> list[tuple[str, dict]]:
    out = []
    for block in body.decode().split("\n\n"):
        if not block.strip():
            continue
        lines = dict(line.split(": ", 1) for line in block.split("\n"))
        out.append((lines["event"], json.loads(lines["data"])))
    return out


def test_sync_json_relayed_byte_for_byte(mgw, upstream, client):
    answer = anthropic_json([("text", "Hello there")],
                            usage={"input_tokens": 7, "output_tokens": 3, "cache_read_input_tokens": 4})
    upstream.handler = lambda r: json_reply(answer, headers=[("request-id", "req_1")])
    raw = client.messages.with_raw_response.create(
        model=CLAUDE, max_tokens=50, messages=HI,
        extra_headers={"anthropic-beta": "tools-2024-04-04", "anthropic-version": "2023-06-01"})
    msg = raw.parse()
    assert msg.content[0].text == "Hello there" and msg.usage.input_tokens == 7
    assert raw.http_response.content == answer
    assert raw.headers["x-fastgw-path"] == "fast" and raw.headers["request-id"] == "req_1"
    got = upstream.requests[-1]
    assert got.target == "/v1/messages"
    assert got.headers["x-api-key"] == "k-anthropic" and MASTER not in json.dumps(got.headers)
    assert got.headers["anthropic-version"] == "2023-06-01"
    assert got.headers["anthropic-beta"] == "tools-2024-04-04"
    assert json.loads(got.body) == {"max_tokens": 50, "messages": HI, "model": CLAUDE}


def test_body_bytes_unchanged_and_query_forwarded(mgw, upstream):
    body = b'{"model":  "claude-haiku-4-5", "max_tokens": 5, "messages": [{"role":"user","content":"x"}],' \
           b' "context_management": {"edits": []}, "future_field": [1, 2]}'
    upstream.handler = lambda r: json_reply(anthropic_json([("text", "ok")]))
    resp = post(mgw.url, "/v1/messages?beta=true", body, {"x-api-key": MASTER, "anthropic-version": "2023-06-01"})
    assert resp.status == 200
    assert upstream.requests[-1].body == body
    assert upstream.requests[-1].target == "/v1/messages?beta=true"


def test_alias_rewrites_only_the_model(mgw, upstream):
    body = b'{"model":"sonnet","max_tokens":5,"messages":[{"role":"user","content":"x"}],"x":{"a" : 1}}'
    upstream.handler = lambda r: json_reply(anthropic_json([("text", "ok")]))
    resp = post(mgw.url, "/v1/messages", body, {"x-api-key": MASTER})
    assert resp.status == 200 and resp.headers["x-fastgw-path"] == "rewritten"
    sent = upstream.requests[-1].body
    assert b'"x":{"a" : 1}' in sent
    assert json.loads(sent)["model"] == "claude-sonnet-4-5"


def test_stream_relayed_byte_for_byte_and_sdk_accumulates(mgw, upstream, client):
    script = [("thinking", "Let me think."), ("text", "Hello"), ("tool", "get_weather", {"city": "Paris"})]
    body = anthropic_sse(script, output_tokens=21,
                         input_usage={"input_tokens": 9, "cache_creation_input_tokens": 100,
                                      "cache_read_input_tokens": 50})
    upstream.handler = lambda r: sse_reply(body)
    raw = post(mgw.url, "/v1/messages", {"model": CLAUDE, "max_tokens": 50, "messages": HI, "stream": True},
               {"x-api-key": MASTER})
    assert raw.status == 200 and raw.body == body
    with client.messages.stream(model=CLAUDE, max_tokens=50, messages=HI) as stream:
        final = stream.get_final_message()
    assert [b.type for b in final.content] == ["thinking", "text", "tool_use"]
    assert final.content[0].signature == "c2lnbmF0dXJl"
    assert final.content[2].input == {"city": "Paris"}
    assert final.stop_reason == "tool_use" and final.usage.output_tokens == 21
    assert final.usage.cache_read_input_tokens == 50


def test_stream_usage_is_accounted(mgw, upstream):
    body = anthropic_sse([("text", "Hi")], output_tokens=13,
                         input_usage={"input_tokens": 5, "cache_creation_input_tokens": 7,
                                      "cache_read_input_tokens": 11})
    upstream.handler = lambda r: sse_reply(body)
    before = _tokens(mgw)
    resp = post(mgw.url, "/v1/messages", {"model": "claude-sonnet-4-5", "max_tokens": 5, "messages": HI,
                                          "stream": True}, {"x-api-key": MASTER})
    assert resp.status == 200
    after = _tokens(mgw)
    assert after.get("prompt", 0) - before.get("prompt", 0) == 5 + 7 + 11
    assert after.get("completion", 0) - before.get("completion", 0) == 13
    assert after.get("cached", 0) - before.get("cached", 0) == 11


def _tokens(gw: GatewayProcess) -> dict[str, float]:
    text = request(gw.url, "GET", "/metrics").body.decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("fastgw_tokens_total{") and 'model="claude-sonnet-4-5"' in line:
            kind = line.split('kind="')[1].split('"')[0]
            out[kind] = float(line.rsplit(" ", 1)[1])
    return out


def test_async_stream_text_events(mgw, upstream):
    upstream.handler = lambda r: sse_reply(anthropic_sse([("text", "Hello world")], piece=3))

    async def run() -> list[str]:
        client = anthropic.AsyncAnthropic(base_url=mgw.url, api_key=MASTER, max_retries=0)
        texts = []
        async with client.messages.stream(model=CLAUDE, max_tokens=20, messages=HI) as stream:
            async for text in stream.text_stream:
                texts.append(text)
        await client.close()
        return texts

    assert "".join(asyncio.run(run())) == "Hello world"


def test_errors_in_anthropic_envelope(mgw, upstream, client):
    with pytest.raises(anthropic.NotFoundError) as nf:
        client.messages.create(model="nope-model", max_tokens=5, messages=HI)
    assert nf.value.body["type"] == "error" and nf.value.body["error"]["type"] == "not_found_error"
    bad = post(mgw.url, "/v1/messages", b"{not json", {"x-api-key": MASTER})
    assert bad.status == 400 and bad.json()["error"]["type"] == "invalid_request_error"
    assert set(bad.json()) == {"type", "error"}
    unauth = post(mgw.url, "/v1/messages", {"model": CLAUDE, "max_tokens": 5, "messages": HI},
                  {"x-api-key": "wrong"})
    assert unauth.status == 401 and unauth.json()["error"]["type"] == "authentication_error"
    bearer = anthropic.Anthropic(base_url=mgw.url, auth_token=MASTER, max_retries=0)
    upstream.handler = lambda r: json_reply(anthropic_json([("text", "ok")]))
    assert bearer.messages.create(model=CLAUDE, max_tokens=5, messages=HI).content[0].text == "ok"
    wrong_method = request(mgw.url, "GET", "/v1/messages", headers={"x-api-key": MASTER})
    assert wrong_method.status == 405 and wrong_method.json()["type"] == "error"


def test_upstream_errors_relayed(mgw, upstream, client):
    overloaded = anthropic_error("overloaded_error", "Overloaded")
    upstream.handler = lambda r: json_reply(overloaded, status=529, headers=[("retry-after", "3")])
    resp = post(mgw.url, "/v1/messages", {"model": CLAUDE, "max_tokens": 5, "messages": HI}, {"x-api-key": MASTER})
    assert resp.status == 529 and resp.body == overloaded and resp.headers["retry-after"] == "3"
    upstream.handler = lambda r: Reply(status=502, headers=[("content-type", "text/html")],
                                       chunks=[b"<html>bad gateway k-anthropic</html>"], content_length=True)
    resp = post(mgw.url, "/v1/messages", {"model": CLAUDE, "max_tokens": 5, "messages": HI}, {"x-api-key": MASTER})
    assert resp.status == 502 and resp.json()["error"]["type"] == "api_error"
    assert "k-anthropic" not in resp.body.decode()
    upstream.handler = lambda r: json_reply(anthropic_error("rate_limit_error", "slow down"), status=429)
    with pytest.raises(anthropic.RateLimitError):
        client.messages.create(model=CLAUDE, max_tokens=5, messages=HI)


def test_midstream_failure_is_an_error_event(mgw, upstream):
    events = anthropic_sse_events([("text", "Hello world, a long answer")], piece=2)
    upstream.handler = lambda r: Reply(headers=[("content-type", "text/event-stream")], chunks=events,
                                       drop_after=5)
    resp = post(mgw.url, "/v1/messages", {"model": "claude-flaky", "max_tokens": 5, "messages": HI,
                                          "stream": True}, {"x-api-key": MASTER})
    assert resp.status == 200
    name, data = _events(resp.body)[-1]
    assert name == "error" and data["type"] == "error" and data["error"]["type"] == "api_error"


def test_count_tokens_relayed(mgw, upstream, client):
    upstream.handler = lambda r: json_reply(b'{"input_tokens":42}')
    result = client.messages.count_tokens(model=CLAUDE, messages=HI)
    assert result.input_tokens == 42
    assert upstream.requests[-1].target == "/v1/messages/count_tokens"
    assert upstream.requests[-1].headers["x-api-key"] == "k-anthropic"


def test_models_list_in_both_shapes(mgw, client):
    ids = [m.id for m in client.models.list()]
    assert CLAUDE in ids and "sonnet" in ids
    detail = client.models.retrieve(CLAUDE)
    assert detail.id == CLAUDE and detail.type == "model"
    with pytest.raises(anthropic.NotFoundError):
        client.models.retrieve("nope")
    plain = request(mgw.url, "GET", "/v1/models", headers={"authorization": f"Bearer {MASTER}"}).json()
    assert plain["object"] == "list" and plain["data"][0]["object"] == "model"


def test_virtual_keys_restrictions_usage_and_log(mgw, upstream):
    admin = {"authorization": f"Bearer {MASTER}"}
    made = request(mgw.url, "POST", "/admin/keys", {"name": "agents", "models": [CLAUDE]}, headers=admin)
    assert made.status == 201
    key = made.json()["key"]
    client = anthropic.Anthropic(base_url=mgw.url, api_key=key, max_retries=0)
    with pytest.raises(anthropic.PermissionDeniedError) as denied:
        client.messages.create(model="sonnet", max_tokens=5, messages=HI)
    assert denied.value.body["error"]["type"] == "permission_error"
    body = anthropic_sse([("text", "ok")], output_tokens=1000, input_usage={
        "input_tokens": 1000, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0})
    upstream.handler = lambda r: sse_reply(body)
    with client.messages.stream(model=CLAUDE, max_tokens=5, messages=HI) as stream:
        assert stream.get_final_message().content[0].text == "ok"
    bearer = anthropic.Anthropic(base_url=mgw.url, auth_token=key, max_retries=0)
    upstream.handler = lambda r: json_reply(anthropic_json([("text", "ok")]))
    assert bearer.messages.create(model=CLAUDE, max_tokens=5, messages=HI).content[0].text == "ok"
    key_id = made.json()["id"]
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        logs = request(mgw.url, "GET", f"/admin/logs?key={key_id}", headers=admin).json()["data"]
        if len(logs) >= 3:
            break
        time.sleep(0.1)
    streamed = next(r for r in logs if r["stream"])
    assert streamed["status"] == 200 and streamed["path"] == "fast"
    assert (streamed["prompt_tokens"], streamed["completion_tokens"]) == (1000, 1000)
    assert streamed["cost_usd"] == pytest.approx(0.006)
    assert any(r["status"] == 403 for r in logs)


def test_builtin_mock_answers_in_anthropic_shape():
    gw = GatewayProcess(None)
    try:
        client = anthropic.Anthropic(base_url=gw.url, api_key="x", max_retries=0)
        msg = client.messages.create(model="mock-gpt", max_tokens=5, messages=HI)
        assert msg.stop_reason == "max_tokens" and msg.usage.output_tokens == 5
        with client.messages.stream(model="mock-gpt", max_tokens=100, messages=HI) as stream:
            final = stream.get_final_message()
        assert final.stop_reason == "end_turn" and final.content[0].text.startswith("This is fastgw")
    finally:
        gw.stop()


def test_cache_reads_and_writes_priced(mgw, upstream):
    usage = {"input_tokens": 100, "cache_creation_input_tokens": 1000, "cache_read_input_tokens": 2000,
             "output_tokens": 10}
    upstream.handler = lambda r: json_reply(anthropic_json([("text", "ok")], usage=usage))
    resp = post(mgw.url, "/v1/messages", {"model": CLAUDE, "max_tokens": 5, "messages": HI},
                {"x-api-key": MASTER, "x-fastgw-conversation-id": "cache-priced"})
    assert resp.status == 200
    rid = resp.headers["x-fastgw-request-id"]
    admin = {"authorization": f"Bearer {MASTER}"}
    deadline = time.monotonic() + 5
    entry = request(mgw.url, "GET", f"/admin/logs/{rid}", headers=admin)
    while entry.status != 200 and time.monotonic() < deadline:
        time.sleep(0.1)
        entry = request(mgw.url, "GET", f"/admin/logs/{rid}", headers=admin)
    record = entry.json()
    assert (record["prompt_tokens"], record["cached_tokens"]) == (3100, 2000)
    # input 1.0, cached 0.1, cache writes 1.25, output 5.0 per million
    assert record["cost_usd"] == pytest.approx((100 * 1.0 + 2000 * 0.1 + 1000 * 1.25 + 10 * 5.0) / 1e6)
