"""Translated providers (Anthropic, Gemini) end to end: a real gateway process, the real
``openai`` SDK (or raw HTTP for byte-level checks) as the client, and the test upstream
speaking each provider's exact wire format (:mod:`bench.wire`)."""

from __future__ import annotations

import asyncio
import base64
import json
import struct
import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from chat_stream import accumulate, events
from conftest import CLAUDE, GEMINI, translated_config
from gateway import GatewayProcess
from rawhttp import open_stream, post, request
from upstream_server import Received, Reply, UpstreamServer, json_reply, sse_reply

from bench.wire import (
    anthropic_error,
    anthropic_error_event,
    anthropic_json,
    anthropic_sse,
    gemini_error,
    gemini_json,
    gemini_sse,
)
from fastgw.translate import anthropic

GEMINI_STREAM_TARGET = f"/v1beta/models/{GEMINI}:streamGenerateContent?alt=sse"
HI = [{"role": "user", "content": "hi"}]
WEATHER_TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}}}}


@pytest.fixture(scope="module")
def tgw(upstream_server: UpstreamServer) -> Iterator[GatewayProcess]:
    """A gateway whose two providers are translated, both pointed at the test upstream."""
    gw = GatewayProcess(translated_config(upstream_server.url, f"""  - name: slow
    type: anthropic
    base_url: {upstream_server.url}
    api_key: k-slow
    models: [claude-slow]
    timeouts: {{idle: 0.4}}
"""))
    yield gw
    gw.stop()


@pytest.fixture
def client(tgw: GatewayProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=tgw.url + "/v1", api_key="client-key", max_retries=0)


def sse_stream(body: bytes, interval: float = 0.0) -> Reply:
    """Anthropic events are ``\\n\\n``-framed; Gemini's ``\\r\\n\\r\\n``: one chunk per event either way."""
    if b"\r\n\r\n" in body:
        parts = [p + b"\r\n\r\n" for p in body.split(b"\r\n\r\n") if p]
        return sse_reply(parts, interval=interval)
    return sse_reply(body, interval=interval)


def last_json(upstream: UpstreamServer) -> dict[str, Any]:
    return json.loads(upstream.requests[-1].body)


# -- chat completions: Anthropic ----------------------------------------------------------


def test_anthropic_sync_text(tgw, upstream, client):
    upstream.handler = lambda r: json_reply(anthropic_json([("text", "Hello there")],
                                                           usage={"input_tokens": 7, "output_tokens": 3}),
                                            headers=[("request-id", "req_a1")])
    raw = client.chat.completions.with_raw_response.create(model=CLAUDE, messages=HI, max_tokens=50)
    result = raw.parse()
    assert result.choices[0].message.content == "Hello there"
    assert result.choices[0].finish_reason == "stop"
    assert result.model == CLAUDE
    assert result.usage is not None and (result.usage.prompt_tokens, result.usage.total_tokens) == (7, 10)
    assert raw.headers["x-fastgw-path"] == "translated" and raw.headers["x-fastgw-provider"] == "claude"
    assert raw.headers["request-id"] == "req_a1"
    got = upstream.requests[-1]
    assert got.method == "POST" and got.target == "/v1/messages"
    assert got.headers["x-api-key"] == "k-anthropic"
    assert got.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in got.headers and "client-key" not in json.dumps(got.headers)
    assert got.body == anthropic.build_request({"messages": HI, "max_tokens": 50}, CLAUDE)[2]
    assert last_json(upstream) == {"model": CLAUDE, "messages": HI, "max_tokens": 50}


def test_anthropic_async_stream_tool_calls_and_usage(tgw, upstream):
    script = [("text", "Let me check."), ("tool", "get_weather", {"city": "Paris", "unit": "celsius"}),
              ("tool", "get_time", {"tz": "Europe/Paris"})]
    upstream.handler = lambda r: sse_stream(anthropic_sse(script, output_tokens=21, piece=5))

    async def run() -> list[Any]:
        client = openai.AsyncOpenAI(base_url=tgw.url + "/v1", api_key="k", max_retries=0)
        stream = await client.chat.completions.create(model=CLAUDE, messages=HI, stream=True, tools=[WEATHER_TOOL],
                                                      stream_options={"include_usage": True})
        chunks = [c async for c in stream]
        await client.close()
        return chunks

    chunks = asyncio.run(run())
    assert json.loads(upstream.requests[-1].body)["stream"] is True
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Let me check."
    calls: dict[int, dict[str, str]] = {}
    arg_chunks = 0
    for c in chunks:
        for tc in (c.choices[0].delta.tool_calls or []) if c.choices else []:
            slot = calls.setdefault(tc.index, {"name": "", "args": "", "id": ""})
            if tc.id:
                slot["id"] = tc.id
            if tc.function and tc.function.name:
                slot["name"] = tc.function.name
            if tc.function and tc.function.arguments:
                slot["args"] += tc.function.arguments
                arg_chunks += 1
    assert [(calls[i]["name"], json.loads(calls[i]["args"])) for i in sorted(calls)] == [
        ("get_weather", {"city": "Paris", "unit": "celsius"}), ("get_time", {"tz": "Europe/Paris"})]
    assert all(calls[i]["id"].startswith("toolu_") for i in calls)
    assert arg_chunks >= 6, "streamed argument deltas arrive as separate chunks"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["tool_calls"]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (10, 21)


def test_anthropic_stream_is_relayed_as_it_arrives(tgw, upstream):
    upstream.handler = lambda r: sse_stream(anthropic_sse([("text", "abcdefghijklmnopqrstuvwxyz" * 2)], piece=4),
                                            interval=0.02)
    resp = post(tgw.url, "/v1/chat/completions", {"model": CLAUDE, "messages": HI, "stream": True})
    assert resp.status == 200 and resp.headers["content-type"] == "text/event-stream"
    assert resp.headers["cache-control"] == "no-cache"
    acc = accumulate(resp.body)
    assert acc.c0.text == "abcdefghijklmnopqrstuvwxyz" * 2 and acc.done and acc.usage is None
    # 13 paced text deltas: never buffered into one answer.
    assert len(resp.chunks) >= 10


def test_anthropic_reasoning_and_finish_reasons(tgw, upstream, client):
    upstream.handler = lambda r: sse_stream(anthropic_sse([("thinking", "Hmm, 2+2"), ("text", "4")],
                                                          stop_reason="max_tokens"))
    resp = post(tgw.url, "/v1/chat/completions", {"model": CLAUDE, "messages": HI, "stream": True,
                                                  "reasoning_effort": "low"})
    acc = accumulate(resp.body)
    assert (acc.c0.reasoning, acc.c0.text, acc.c0.finish_reason) == ("Hmm, 2+2", "4", "length")
    assert last_json(upstream)["thinking"]["type"] == "enabled"
    for reason, want in (("end_turn", "stop"), ("max_tokens", "length"), ("refusal", "content_filter"),
                         ("stop_sequence", "stop")):
        upstream.handler = lambda r, reason=reason: json_reply(
            anthropic_json([("thinking", "deep"), ("text", "x")], stop_reason=reason))
        result = client.chat.completions.create(model=CLAUDE, messages=HI)
        assert result.choices[0].finish_reason == want
        assert result.choices[0].message.reasoning_content == "deep"  # type: ignore[attr-defined]


def test_anthropic_errors_become_envelopes(tgw, upstream, client):
    upstream.handler = lambda r: json_reply(anthropic_error("overloaded_error", "Overloaded"), status=529)
    resp = post(tgw.url, "/v1/chat/completions", {"model": CLAUDE, "messages": HI})
    assert resp.status == 503
    assert resp.error() == {"message": "Overloaded", "type": "overloaded", "param": None, "code": "overloaded_error"}
    upstream.handler = lambda r: json_reply(
        anthropic_error("rate_limit_error", "Slow down"), status=429,
        headers=[("retry-after", "12"), ("anthropic-ratelimit-requests-remaining", "0"), ("set-cookie", "x")])
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(model=CLAUDE, messages=HI, stream=True)
    assert info.value.status_code == 429
    assert info.value.response.headers["retry-after"] == "12"
    assert info.value.response.headers["anthropic-ratelimit-requests-remaining"] == "0"
    assert "set-cookie" not in info.value.response.headers
    assert info.value.body["type"] == "rate_limit_error"  # type: ignore[index]


def test_unsupported_param_is_400_naming_it(tgw, upstream, client):
    before = len(upstream.requests)
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=CLAUDE, messages=HI, n=2)
    assert info.value.status_code == 400
    assert info.value.param == "n" and info.value.code == "unsupported_parameter"
    assert len(upstream.requests) == before, "nothing went upstream"
    resp = post(tgw.url, "/v1/chat/completions", b"[1,2]")
    assert resp.status == 400


def test_midstream_provider_error_event(tgw, upstream):
    body = anthropic_sse([("text", "partial answer")], end=False) + anthropic_error_event()
    upstream.handler = lambda r: sse_stream(body)
    resp = post(tgw.url, "/v1/chat/completions", {"model": CLAUDE, "messages": HI, "stream": True})
    assert resp.status == 200
    payloads = events(resp.body)
    assert "[DONE]" not in payloads
    errors = [p for p in payloads if "error" in p]
    assert len(errors) == 1 and payloads[-1] is errors[0]
    assert errors[0]["error"]["type"] == "overloaded"
    acc = accumulate(resp.body)
    assert acc.c0.text == "partial answer" and acc.error is not None


def test_upstream_drops_midstream(tgw, upstream):
    chunks = sse_stream(anthropic_sse([("text", "one two three four five six seven")], piece=3)).chunks
    upstream.handler = lambda r: Reply(headers=[("content-type", "text/event-stream")], chunks=chunks,
                                       drop_after=6)
    resp = post(tgw.url, "/v1/chat/completions", {"model": CLAUDE, "messages": HI, "stream": True})
    assert resp.status == 200
    payloads = events(resp.body)
    assert "[DONE]" not in payloads
    assert payloads[-1]["error"]["code"] == "upstream_disconnected"
    assert sum("error" in p for p in payloads) == 1
    assert accumulate(resp.body).c0.text.startswith("one")
    assert "mid-stream" in tgw.logs() and "k-anthropic" not in tgw.logs()


def test_upstream_idle_timeout_midstream(tgw, upstream):
    chunks = sse_stream(anthropic_sse([("text", "hello")], end=False)).chunks
    upstream.handler = lambda r: Reply(headers=[("content-type", "text/event-stream")], chunks=chunks, hang=True)
    resp = post(tgw.url, "/v1/chat/completions", {"model": "claude-slow", "messages": HI, "stream": True})
    payloads = events(resp.body)
    assert payloads[-1]["error"]["type"] == "timeout" and payloads[-1]["error"]["code"] == "upstream_timeout"
    assert "[DONE]" not in payloads
    assert upstream.requests[-1].headers["x-api-key"] == "k-slow"


def test_client_leaving_midstream_closes_upstream(tgw, upstream):
    chunks = sse_stream(anthropic_sse([("text", "hello")], end=False, piece=10)).chunks
    upstream.handler = lambda r: Reply(headers=[("content-type", "text/event-stream")], chunks=chunks, hang=True)
    before = upstream.closed_midstream
    body = json.dumps({"model": CLAUDE, "messages": HI, "stream": True}).encode()
    open_stream(tgw.port, body, b"hello").close()
    deadline = time.monotonic() + 2
    while upstream.closed_midstream == before and time.monotonic() < deadline:
        time.sleep(0.02)
    assert upstream.closed_midstream == before + 1


# -- chat completions: Gemini -------------------------------------------------------------


def test_gemini_sync_stream_text_and_tools(tgw, upstream, client):
    script = [("thinking", "Planning"), ("text", "Sure, checking the weather."),
              ("tool", "get_weather", {"city": "Oslo"})]
    upstream.handler = lambda r: sse_stream(gemini_sse(script, thoughts_tokens=4))
    stream = client.chat.completions.create(model=GEMINI, messages=HI, stream=True, tools=[WEATHER_TOOL],
                                            stream_options={"include_usage": True})
    chunks = list(stream)
    got = upstream.requests[-1]
    assert got.target == GEMINI_STREAM_TARGET
    assert got.headers["x-goog-api-key"] == "k-gemini" and "authorization" not in got.headers
    assert json.loads(got.body)["contents"] == [{"role": "user", "parts": [{"text": "hi"}]}]
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    assert "".join(d.content or "" for d in deltas) == "Sure, checking the weather."
    assert "".join(getattr(d, "reasoning_content", None) or "" for d in deltas) == "Planning"
    calls = [tc for d in deltas for tc in d.tool_calls or []]
    assert [(tc.function.name, json.loads(tc.function.arguments)) for tc in calls] == [
        ("get_weather", {"city": "Oslo"})]
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == [
        "tool_calls"]
    usage = chunks[-1].usage
    assert usage is not None and (usage.prompt_tokens, usage.completion_tokens) == (10, 9)
    assert usage.completion_tokens_details.reasoning_tokens == 4  # type: ignore[union-attr]


def test_gemini_nonstream_tools_and_finish_reasons(tgw, upstream, client):
    upstream.handler = lambda r: json_reply(gemini_json([("tool", "get_weather", {"city": "Rome"}, "call-1")]))
    result = client.chat.completions.create(model=GEMINI, messages=HI, tools=[WEATHER_TOOL])
    assert upstream.requests[-1].target == f"/v1beta/models/{GEMINI}:generateContent"
    msg = result.choices[0].message
    assert msg.tool_calls and msg.tool_calls[0].function.name == "get_weather"  # type: ignore[union-attr]
    assert json.loads(msg.tool_calls[0].function.arguments) == {"city": "Rome"}  # type: ignore[union-attr]
    assert result.choices[0].finish_reason == "tool_calls"
    for reason, want in (("STOP", "stop"), ("MAX_TOKENS", "length"), ("SAFETY", "content_filter")):
        upstream.handler = lambda r, reason=reason: json_reply(gemini_json([("text", "t")], finish_reason=reason))
        assert client.chat.completions.create(model=GEMINI, messages=HI).choices[0].finish_reason == want
        upstream.handler = lambda r, reason=reason: sse_stream(gemini_sse([("text", "t")], finish_reason=reason))
        chunks = list(client.chat.completions.create(model=GEMINI, messages=HI, stream=True))
        assert [c.choices[0].finish_reason for c in chunks if c.choices[0].finish_reason] == [want]


def test_gemini_json_array_stream_is_understood(tgw, upstream):
    parts = [json.loads(p[6:]) for p in gemini_sse([("text", "hello world, this is long")]).split(b"\r\n\r\n") if p]
    body = json.dumps(parts).encode()
    upstream.handler = lambda r: Reply(headers=[("content-type", "application/json")],
                                       chunks=[body[:17], body[17:]])
    resp = post(tgw.url, "/v1/chat/completions", {"model": GEMINI, "messages": HI, "stream": True})
    acc = accumulate(resp.body)
    assert acc.c0.text == "hello world, this is long" and acc.done and acc.c0.finish_reason == "stop"


def test_gemini_errors(tgw, upstream, client):
    upstream.handler = lambda r: json_reply(gemini_error(429, "RESOURCE_EXHAUSTED", "Quota exceeded"), status=429,
                                            headers=[("retry-after", "3")])
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(model=GEMINI, messages=HI)
    assert info.value.response.headers["retry-after"] == "3"
    assert info.value.code == "RESOURCE_EXHAUSTED"
    upstream.handler = lambda r: json_reply(gemini_error(503, "UNAVAILABLE", "busy"), status=503)
    resp = post(tgw.url, "/v1/chat/completions", {"model": GEMINI, "messages": HI, "stream": True})
    assert resp.status == 503 and resp.error()["message"] == "busy"
    # A mid-stream error payload ends the stream with one error event.
    body = gemini_sse([("text", "partial")], finish_reason=None) + b'data: {"error":{"code":500,' \
        b'"message":"Internal error","status":"INTERNAL"}}\r\n\r\n'
    upstream.handler = lambda r: sse_stream(body)
    resp = post(tgw.url, "/v1/chat/completions", {"model": GEMINI, "messages": HI, "stream": True})
    payloads = events(resp.body)
    assert "[DONE]" not in payloads and payloads[-1]["error"]["message"] == "Internal error"


def test_malformed_provider_body_is_502(tgw, upstream):
    upstream.handler = lambda r: json_reply(b"not json at all")
    resp = post(tgw.url, "/v1/chat/completions", {"model": CLAUDE, "messages": HI})
    assert resp.status == 502 and resp.error()["code"] == "upstream_malformed"


# -- Responses API ------------------------------------------------------------------------


@pytest.mark.parametrize("model", [CLAUDE, GEMINI])
def test_responses_nonstream(tgw, upstream, client, model):
    if model == CLAUDE:
        upstream.handler = lambda r: json_reply(anthropic_json([("text", "Bonjour")]))
    else:
        upstream.handler = lambda r: json_reply(gemini_json([("text", "Bonjour")]))
    result = client.responses.create(model=model, input="Say hello in French", instructions="Be brief",
                                     max_output_tokens=64)
    assert result.output_text == "Bonjour" and result.status == "completed"
    assert result.model == model and result.usage is not None and result.usage.input_tokens == 10
    sent = last_json(upstream)
    if model == CLAUDE:
        assert sent["system"][0]["text"] == "Be brief" and sent["max_tokens"] == 64
    else:
        assert sent["systemInstruction"]["parts"][0]["text"] == "Be brief"


@pytest.mark.parametrize("model", [CLAUDE, GEMINI])
def test_responses_stream_with_tool_call(tgw, upstream, client, model):
    script = [("text", "Checking."), ("tool", "get_weather", {"city": "Lima"})]
    if model == CLAUDE:
        upstream.handler = lambda r: sse_stream(anthropic_sse(script))
    else:
        upstream.handler = lambda r: sse_stream(gemini_sse(script))
    tools = [{"type": "function", "name": "get_weather", "parameters": WEATHER_TOOL["function"]["parameters"]}]
    with client.responses.stream(model=model, input="weather?", tools=tools) as stream:  # type: ignore[arg-type]
        kinds = [ev.type for ev in stream]
        final = stream.get_final_response()
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert "response.output_text.delta" in kinds and "response.function_call_arguments.done" in kinds
    assert final.output_text == "Checking."
    call = next(item for item in final.output if item.type == "function_call")
    assert call.name == "get_weather" and json.loads(call.arguments) == {"city": "Lima"}
    assert final.usage is not None and final.usage.input_tokens == 10
    raw = post(tgw.url, "/v1/responses", {"model": model, "input": "x", "stream": True})
    assert raw.headers["content-type"] == "text/event-stream"
    assert raw.body.startswith(b"event: response.created\ndata: ")


def test_responses_stream_midstream_failure(tgw, upstream):
    chunks = sse_stream(anthropic_sse([("text", "a b c d e f g")], piece=2)).chunks
    upstream.handler = lambda r: Reply(headers=[("content-type", "text/event-stream")], chunks=chunks,
                                       drop_after=5)
    resp = post(tgw.url, "/v1/responses", {"model": CLAUDE, "input": "x", "stream": True})
    kinds = [line[7:] for line in resp.body.decode().split("\n") if line.startswith("event: ")]
    assert kinds[-2:] == ["error", "response.failed"]


def test_responses_unsupported_state_is_400(tgw, upstream, client):
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model=CLAUDE, input="x", previous_response_id="resp_1")
    assert info.value.param == "previous_response_id"


# -- embeddings, legacy completions, models, passthrough ----------------------------------


def test_gemini_embeddings_float_and_base64(tgw, upstream, client):
    vectors = [[0.25, -1.5, 3.0], [0.5, 0.125, -2.0]]
    upstream.handler = lambda r: json_reply(json.dumps({"embeddings": [{"values": v} for v in vectors]}).encode())
    as_float = client.embeddings.create(model=GEMINI, input=["a", "b"], encoding_format="float")
    assert [d.embedding for d in as_float.data] == vectors and as_float.model == GEMINI
    got = upstream.requests[-1]
    assert got.target == f"/v1beta/models/{GEMINI}:batchEmbedContents"
    assert got.headers["x-goog-api-key"] == "k-gemini"
    assert [r["content"]["parts"][0]["text"] for r in json.loads(got.body)["requests"]] == ["a", "b"]
    # The SDK asks for base64 by default and decodes it itself.
    default = client.embeddings.create(model=GEMINI, input=["a", "b"])
    assert json.loads(upstream.requests[-1].body)["requests"][0]["model"] == f"models/{GEMINI}"
    assert [d.embedding for d in default.data] == vectors
    raw = post(tgw.url, "/v1/embeddings", {"model": GEMINI, "input": "a", "encoding_format": "base64"})
    packed = base64.b64decode(raw.json()["data"][0]["embedding"])
    assert list(struct.unpack("<3f", packed)) == vectors[0]


def test_embeddings_and_completions_refused_where_unsupported(tgw, upstream, client):
    with pytest.raises(openai.BadRequestError) as info:
        client.embeddings.create(model=CLAUDE, input="a")
    assert "embeddings" in info.value.message
    resp = post(tgw.url, "/v1/completions", {"model": GEMINI, "prompt": "x"})
    assert resp.status == 400
    err = resp.error()
    assert err["code"] == "unsupported_endpoint" and err["param"] is None and "completions" in err["message"]


def test_translated_models_are_listed(tgw, client):
    ids = {m.id for m in client.models.list()}
    assert {CLAUDE, GEMINI, f"claude/{CLAUDE}", f"gem/{GEMINI}"} <= ids
    assert client.models.retrieve(CLAUDE).owned_by == "claude"


def test_qualified_name_routes_and_keeps_client_model(tgw, upstream, client):
    upstream.handler = lambda r: json_reply(anthropic_json([("text", "ok")]))
    result = client.chat.completions.create(model=f"claude/{CLAUDE}", messages=HI)
    assert result.model == f"claude/{CLAUDE}"
    assert last_json(upstream)["model"] == CLAUDE


def test_passthrough_reaches_anthropic_natively(tgw, upstream):
    native = {"model": CLAUDE, "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
    upstream.handler = lambda r: json_reply(anthropic_json([("text", "native")]))
    resp = post(tgw.url, "/p/claude/v1/messages", native, headers={"x-api-key": "client-key",
                                                                  "anthropic-version": "2023-06-01"})
    assert resp.status == 200 and resp.json()["content"][0]["text"] == "native"
    got: Received = upstream.requests[-1]
    assert got.target == "/v1/messages" and json.loads(got.body) == native
    assert got.headers["x-api-key"] == "k-anthropic" and got.headers["anthropic-version"] == "2023-06-01"


def test_gateway_still_answers_plain_requests(tgw):
    assert request(tgw.url, "GET", "/health").status == 200


# -- the usage handle() returns (the core accounts with it) -------------------------------


def _handle(upstream_url: str, wire: str, body: dict[str, Any], suffix: str = "/chat/completions") -> tuple[Any, bytes]:
    """Call ``translated.handle`` in-process with a fake ASGI exchange; (its return, the body sent)."""
    from fastgw.config import ProviderConfig
    from fastgw.egress import translated
    from fastgw.exchange import Exchange
    from fastgw.ingress.body import decode_routing
    from fastgw.routing.providers import Provider
    from fastgw.routing.router import Route
    from fastgw.upstream.backend import AsyncioBackend

    async def run() -> tuple[Any, bytes]:
        model = CLAUDE if wire == "anthropic" else GEMINI
        provider = Provider(ProviderConfig(name=wire, type=wire, base_url=upstream_url, api_key="k",  # type: ignore[arg-type]
                                           models=[model]), AsyncioBackend())
        sent: list[bytes] = []
        never = asyncio.Event()

        async def receive() -> dict[str, Any]:
            await never.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message.get("body", b""))

        raw = json.dumps({"model": model, **body}).encode()
        ex = Exchange({"type": "http", "headers": [], "path": "/v1" + suffix, "method": "POST"}, receive, send)
        try:
            usage = await translated.handle(ex, provider, Route(model, provider, model), suffix, raw,
                                            decode_routing(raw))
        finally:
            assert provider.pool is not None
            await provider.pool.aclose()
        return usage, b"".join(sent)

    return asyncio.run(run())


@pytest.mark.parametrize("stream", [False, True])
def test_handle_returns_usage(upstream, stream):
    from fastgw.tokens import Usage

    usage_a = {"input_tokens": 5, "cache_read_input_tokens": 2, "cache_creation_input_tokens": 0}
    if stream:
        upstream.handler = lambda r: sse_stream(anthropic_sse([("text", "hi")], input_usage=usage_a, output_tokens=4))
    else:
        upstream.handler = lambda r: json_reply(anthropic_json([("text", "hi")], usage=dict(usage_a, output_tokens=4)))
    usage, sent = _handle(upstream.url, "anthropic", {"messages": HI, "stream": stream})
    assert isinstance(usage, Usage)
    assert (usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens, usage.total_tokens) == (7, 4, 2, 11)
    assert b"hi" in sent
    if stream:
        upstream.handler = lambda r: sse_stream(gemini_sse([("text", "yo")], thoughts_tokens=3))
    else:
        upstream.handler = lambda r: json_reply(gemini_json([("text", "yo")], thoughts_tokens=3))
    usage, _ = _handle(upstream.url, "gemini", {"messages": HI, "stream": stream})
    assert (usage.prompt_tokens, usage.completion_tokens, usage.reasoning_tokens) == (10, 8, 3)
    # Responses over chat: the same account.
    usage, _ = _handle(upstream.url, "gemini", {"input": "x", "stream": stream}, "/responses")
    assert (usage.prompt_tokens, usage.completion_tokens) == (10, 8)


def test_handle_returns_none_on_provider_error(upstream):
    upstream.handler = lambda r: json_reply(anthropic_error("api_error", "boom"), status=500)
    usage, sent = _handle(upstream.url, "anthropic", {"messages": HI})
    assert usage is None and b"boom" in sent


def test_gemini_embeddings_usage_counts_prompt_and_total(upstream):
    upstream.handler = lambda r: json_reply(json.dumps(
        {"embeddings": [{"values": [0.5, 0.25]}], "usageMetadata": {"promptTokenCount": 6}}).encode())
    usage, _ = _handle(upstream.url, "gemini", {"input": "a"}, "/embeddings")
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (6, 0, 6)
