"""The byte fast path, end to end through a real gateway process and a real upstream."""

from __future__ import annotations

import asyncio
import json

import openai
import pytest
from rawhttp import post
from upstream_server import UPSTREAM_JSON, Reply, json_reply, provider_like_stream, sse_events, sse_reply

CHAT_BODY = (
    b'{"model":"gpt-4o-mini",  "messages":[{"role":"user","content":"caf\\u00e9 \xe2\x9c\x93"}],'
    b' "temperature":0.25e0,"metadata":{"a":[1,2,{"b":null}]}}'
)
def test_json_bytes_pass_through_untouched(gateway, upstream):
    upstream.handler = lambda r: json_reply(
        UPSTREAM_JSON,
        headers=[("x-request-id", "req_up_1"), ("x-ratelimit-remaining-requests", "99"),
                 ("openai-organization", "acme"), ("set-cookie", "a=b")],
    )
    resp = post(gateway.url, "/v1/chat/completions", CHAT_BODY)
    assert resp.status == 200
    assert resp.body == UPSTREAM_JSON
    assert upstream.requests[-1].body == CHAT_BODY
    assert upstream.requests[-1].target == "/v1/chat/completions"
    assert upstream.requests[-1].headers["authorization"] == "Bearer sk-test"
    assert resp.headers["x-request-id"] == "req_up_1"
    assert resp.headers["x-ratelimit-remaining-requests"] == "99"
    assert "openai-organization" not in resp.headers and "set-cookie" not in resp.headers
    assert resp.headers["x-fastgw-provider"] == "local"
    assert resp.headers["x-fastgw-path"] == "fast"
    assert resp.headers["x-fastgw-request-id"].startswith("fgw-")


def test_sse_bytes_pass_through_chunk_by_chunk(gateway, upstream):
    upstream.handler = lambda r: provider_like_stream(r, interval=0.01)
    request_body = b'{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"messages":[]}'
    resp = post(gateway.url, "/v1/chat/completions", request_body)
    assert resp.status == 200
    assert resp.headers["content-type"] == "text/event-stream"
    assert resp.body == sse_events(20, usage=True)
    assert upstream.requests[-1].body == request_body
    assert resp.headers["x-fastgw-path"] == "fast"
    # Paced upstream chunks arrive as separate reads: nothing was coalesced.
    assert len(resp.chunks) >= 15


def test_stream_without_client_usage_gets_exactly_the_provider_stream(gateway, upstream):
    upstream.handler = lambda r: provider_like_stream(r, interval=0.005)
    request_body = b'{"model":"gpt-4o-mini", "stream":true,"messages":[{"role":"user","content":"x"}]}'
    resp = post(gateway.url, "/v1/chat/completions", request_body)
    assert resp.status == 200
    # fastgw asked for usage upstream (spliced in front, the rest untouched) ...
    sent = upstream.requests[-1].body
    assert sent == b'{"stream_options":{"include_usage":true},' + request_body[1:]
    # ... and removed the usage chunk: the client sees what the provider would have sent it.
    assert resp.body == sse_events(20, usage=False)
    assert resp.headers["x-fastgw-path"] == "fast"


def test_qualified_model_rewrites_only_the_model(gateway, upstream):
    upstream.handler = lambda r: json_reply(UPSTREAM_JSON)
    body = CHAT_BODY.replace(b'"gpt-4o-mini"', b'"local/gpt-4o-mini"')
    resp = post(gateway.url, "/v1/chat/completions", body)
    assert resp.status == 200 and resp.body == UPSTREAM_JSON
    assert resp.headers["x-fastgw-path"] == "rewritten"
    sent = upstream.requests[-1].body
    assert json.loads(sent)["model"] == "gpt-4o-mini"
    # Every other top-level value went upstream as the very same bytes.
    assert b'"messages":[{"role":"user","content":"caf\\u00e9 \xe2\x9c\x93"}]' in sent
    assert b'"temperature":0.25e0' in sent
    assert b'"metadata":{"a":[1,2,{"b":null}]}' in sent


def test_alias_resolves_to_first_target(gateway, upstream):
    upstream.handler = lambda r: json_reply(UPSTREAM_JSON)
    resp = post(gateway.url, "/v1/chat/completions", {"model": "chain", "messages": []})
    assert resp.status == 200
    assert resp.headers["x-fastgw-provider"] == "local"
    assert json.loads(upstream.requests[-1].body)["model"] == "gpt-4o-mini"


def test_reasoning_model_gets_max_completion_tokens(gateway, upstream):
    upstream.handler = lambda r: json_reply(UPSTREAM_JSON)
    resp = post(gateway.url, "/v1/chat/completions", {"model": "o4-mini", "max_tokens": 50, "messages": []})
    assert resp.status == 200
    assert resp.headers["x-fastgw-path"] == "rewritten"
    sent = json.loads(upstream.requests[-1].body)
    assert sent == {"model": "o4-mini", "max_completion_tokens": 50, "messages": []}
    assert upstream.requests[-1].headers["authorization"] == "Bearer sk-other"


def test_other_endpoints_relay(gateway, upstream):
    for path in ("/v1/completions", "/v1/embeddings", "/v1/responses"):
        upstream.handler = lambda r: json_reply(b'{"object":"x","path":"' + r.target.encode() + b'"}')
        resp = post(gateway.url, path, {"model": "gpt-4o-mini", "input": "hi"})
        assert resp.status == 200, resp.body
        assert resp.json()["path"] == path


def test_openai_sdk_sync_stream_and_not(gateway, upstream):
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key="client-key", max_retries=0)
    upstream.handler = lambda r: json_reply(UPSTREAM_JSON)
    result = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    assert result.choices[0].message.content == "hi 👋"
    assert result.usage is not None and result.usage.total_tokens == 5
    upstream.handler = lambda r: sse_reply(sse_events(5))
    stream = client.chat.completions.create(model="gpt-4o-mini", messages=[], stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "w0 w1 w2 w3 w4 "
    # The client's own key never reaches the provider.
    assert upstream.requests[-1].headers["authorization"] == "Bearer sk-test"


def test_openai_sdk_async_stream_and_not(gateway, upstream):
    async def run() -> None:
        client = openai.AsyncOpenAI(base_url=gateway.url + "/v1", api_key="client-key", max_retries=0)
        upstream.handler = lambda r: json_reply(UPSTREAM_JSON)
        result = await client.chat.completions.create(model="fast", messages=[{"role": "user", "content": "x"}])
        assert result.choices[0].finish_reason == "stop"
        upstream.handler = lambda r: sse_reply(sse_events(3, usage=True))
        stream = await client.chat.completions.create(
            model="gpt-4o-mini", messages=[], stream=True, stream_options={"include_usage": True})
        chunks = [c async for c in stream]
        assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 3
        await client.close()

    asyncio.run(run())


def test_upstream_error_with_envelope_is_relayed(gateway, upstream):
    err = b'{"error":{"message":"Rate limit reached","type":"requests","param":null,"code":"rate_limit_exceeded"}}'
    upstream.handler = lambda r: json_reply(err, status=429, headers=[("retry-after", "7")])
    resp = post(gateway.url, "/v1/chat/completions", {"model": "gpt-4o-mini", "messages": []})
    assert resp.status == 429
    assert resp.body == err
    assert resp.headers["retry-after"] == "7"


def test_upstream_error_without_envelope_is_wrapped(gateway, upstream):
    upstream.handler = lambda r: Reply(status=502, headers=[("content-type", "text/html")],
                                       chunks=[b"<html>bad gateway sk-test</html>"], content_length=True)
    resp = post(gateway.url, "/v1/chat/completions", {"model": "gpt-4o-mini", "messages": []})
    assert resp.status == 502
    error = resp.error()
    assert error["type"] == "upstream_error"
    assert "bad gateway" in error["message"]
    assert "sk-test" not in error["message"]


def test_upstream_dies_mid_stream(gateway, upstream):
    upstream.handler = lambda r: Reply(headers=[("content-type", "text/event-stream")],
                                       chunks=sse_reply(sse_events(10)).chunks, drop_after=4)
    resp = post(gateway.url, "/v1/chat/completions", {"model": "gpt-4o-mini", "stream": True, "messages": []})
    assert resp.status == 200
    events = [e for e in resp.body.split(b"\n\n") if e]
    assert len(events) == 5
    assert b"[DONE]" not in resp.body
    last = json.loads(events[-1].removeprefix(b"data: "))
    assert last["error"]["type"] == "upstream_error"
    assert last["error"]["code"] == "upstream_disconnected"
    assert "mid-stream" in gateway.logs()


@pytest.mark.parametrize("fixture_kind", ["json", "sse"])
def test_conformance_openai_replayed_byte_for_byte(gateway, upstream, fixture_kind):
    from conformance import conformance_dir, manifest

    root = conformance_dir()
    if root is None:
        pytest.skip("the conformance corpus (FASTGW_CONFORMANCE_DIR) is absent")
    entries = [e for e in manifest() if e["provider"] == "openai"
               and str((e.get("fidelity") or {}).get("response", "")).startswith("verbatim")]
    checked = 0
    for entry in entries:
        files = [root / f for f in entry["files"]]
        body_file = next((f for f in files if f.name.endswith(".response.sse" if fixture_kind == "sse"
                                                              else ".response.json")), None)
        if body_file is None:
            continue
        data = body_file.read_bytes()
        status = int(entry.get("status") or 200)
        ctype = entry.get("content_type") or ("text/event-stream" if fixture_kind == "sse" else "application/json")
        if fixture_kind == "sse":
            reply = sse_reply(data, content_type=ctype)
            reply.status = status
        else:
            reply = json_reply(data, status=status)
            reply.headers = [("content-type", ctype)]
        upstream.handler = lambda r, reply=reply: reply
        api = entry.get("api", "")
        path = {"responses": "/v1/responses", "embeddings": "/v1/embeddings"}.get(api, "/v1/chat/completions")
        request_body = {"model": "gpt-4o-mini", "stream": fixture_kind == "sse", "input": "x", "messages": []}
        if fixture_kind == "sse" and path == "/v1/chat/completions":
            # The recordings were made asking for usage: ask too, and get them byte for byte.
            request_body["stream_options"] = {"include_usage": True}
        resp = post(gateway.url, path, request_body)
        assert resp.status == status, entry["id"]
        if status < 400:
            assert resp.body == data, entry["id"]
        checked += 1
    assert checked > 0
