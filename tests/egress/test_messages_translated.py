"""The Anthropic front door (/v1/messages) to OpenAI-compatible and Gemini providers: a real
gateway process, the real ``anthropic`` SDK as the client (its own stream accumulator builds the
final message), the test upstream speaking each provider's wire format (:mod:`bench.wire`)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import anthropic
import pytest
from conftest import GEMINI
from gateway import GatewayProcess
from rawhttp import post, request
from upstream_server import Reply, UpstreamServer, json_reply, sse_reply

from bench.wire import (
    gemini_error,
    gemini_json,
    gemini_sse,
    openai_chat_json,
    openai_chat_sse,
    openai_chat_sse_events,
)

GPT = "gpt-4o-mini"
HI = [{"role": "user", "content": "hi"}]
WEATHER = {"name": "get_weather", "description": "Weather", "input_schema": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


@pytest.fixture(scope="module")
def tgw(upstream_server: UpstreamServer) -> Iterator[GatewayProcess]:
    gw = GatewayProcess(f"""
providers:
  - name: oai
    type: openai
    base_url: {upstream_server.url}/v1
    api_key: sk-oai
    models: [{GPT}, o4-mini]
  - name: gem
    type: gemini
    base_url: {upstream_server.url}
    api_key: k-gemini
    models: [{GEMINI}]
  - name: lenient
    type: openai-compatible
    base_url: {upstream_server.url}/v1
    models: [lenient-model]
    drop_unsupported_params: true
aliases:
  claude-sonnet-4-5: oai/{GPT}
""")
    yield gw
    gw.stop()


@pytest.fixture
def client(tgw: GatewayProcess) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=tgw.url, api_key="any", max_retries=0)


def sent(upstream: UpstreamServer) -> dict[str, Any]:
    return json.loads(upstream.requests[-1].body)


def gemini_stream(body: bytes) -> Reply:
    return sse_reply([p + b"\r\n\r\n" for p in body.split(b"\r\n\r\n") if p])


# -- to an OpenAI-compatible provider --------------------------------------------------------


def test_openai_sync_text_and_request_mapping(tgw, upstream, client):
    upstream.handler = lambda r: json_reply(openai_chat_json([("text", "Hello there")]))
    raw = client.messages.with_raw_response.create(
        model=GPT, max_tokens=64, system=[{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        messages=HI, stop_sequences=["END"], extra_body={"temperature": 0.5}, metadata={"user_id": "u-1"})
    msg = raw.parse()
    assert msg.content[0].type == "text" and msg.content[0].text == "Hello there"
    assert msg.stop_reason == "end_turn" and msg.model == GPT
    assert msg.usage.input_tokens == 10 and msg.usage.output_tokens == 5
    assert raw.headers["x-fastgw-path"] == "translated"
    assert raw.headers["x-fastgw-dropped-params"] == "cache_control"
    got = upstream.requests[-1]
    assert got.target == "/v1/chat/completions" and got.headers["authorization"] == "Bearer sk-oai"
    assert sent(upstream) == {"model": GPT, "messages": [{"role": "system", "content": "Be brief."},
                                                         {"role": "user", "content": "hi"}],
                              "max_tokens": 64, "temperature": 0.5, "stop": ["END"], "user": "u-1"}


def test_openai_stream_tools_thinking_accumulated_by_the_sdk(tgw, upstream, client):
    script = [("thinking", "Check the weather."), ("text", "Let me look."),
              ("tool", "get_weather", {"city": "Paris"}), ("tool", "get_weather", {"city": "Rome"})]
    upstream.handler = lambda r: sse_reply(openai_chat_sse(script, piece=3, usage={
        "prompt_tokens": 30, "completion_tokens": 12, "total_tokens": 42,
        "prompt_tokens_details": {"cached_tokens": 20}}))
    with client.messages.stream(model=GPT, max_tokens=500, messages=HI, tools=[WEATHER],
                                tool_choice={"type": "any", "disable_parallel_tool_use": True}) as stream:
        final = stream.get_final_message()
    assert [b.type for b in final.content] == ["thinking", "text", "tool_use", "tool_use"]
    assert final.content[0].thinking == "Check the weather." and final.content[1].text == "Let me look."
    assert final.content[2].name == "get_weather" and final.content[2].input == {"city": "Paris"}
    assert final.content[3].input == {"city": "Rome"} and final.content[3].id.startswith("call_")
    assert final.stop_reason == "tool_use"
    assert (final.usage.input_tokens, final.usage.cache_read_input_tokens, final.usage.output_tokens) == (10, 20, 12)
    req = sent(upstream)
    assert req["stream"] is True and req["stream_options"] == {"include_usage": True}
    assert req["tools"] == [{"type": "function", "function": {"name": "get_weather", "description": "Weather",
                                                              "parameters": WEATHER["input_schema"]}}]
    assert req["tool_choice"] == "required" and req["parallel_tool_calls"] is False


def test_openai_stream_event_order(tgw, upstream):
    upstream.handler = lambda r: sse_reply(openai_chat_sse([("text", "Hi"), ("tool", "f", {})]))
    resp = post(tgw.url, "/v1/messages", {"model": GPT, "max_tokens": 5, "messages": HI, "stream": True})
    names = [b.split("\n")[0][7:] for b in resp.body.decode().split("\n\n") if b]
    assert names == ["message_start", "ping", "content_block_start", "content_block_delta", "content_block_stop",
                     "content_block_start", "content_block_stop", "message_delta", "message_stop"]
    assert resp.headers["content-type"].startswith("text/event-stream")


def test_tool_round_trip_history_mapping(tgw, upstream, client):
    upstream.handler = lambda r: json_reply(openai_chat_json([("text", "It is sunny.")]))
    messages = [
        {"role": "user", "content": [{"type": "text", "text": "Weather?"},
                                     {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                                                  "data": "iVBOR"}}]},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "hm", "signature": "sig"},
            {"type": "text", "text": "Checking."},
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "sunny"}]},
            {"type": "text", "text": "And?"}]},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_2", "name": "get_weather",
                                           "input": {"city": "x"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_2", "is_error": True,
                                      "content": "unknown city"}]},
    ]
    msg = client.messages.create(model=GPT, max_tokens=100, messages=messages, tools=[WEATHER])
    assert msg.content[0].text == "It is sunny."
    assert sent(upstream)["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Weather?"},
                                     {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR"}}]},
        {"role": "assistant", "content": "Checking.", "tool_calls": [
            {"id": "toolu_1", "type": "function", "function": {"name": "get_weather",
                                                               "arguments": '{"city":"Paris"}'}}]},
        {"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"},
        {"role": "user", "content": "And?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "toolu_2", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"x"}'}}]},
        {"role": "tool", "tool_call_id": "toolu_2", "content": "Error: unknown city"},
    ]


def test_thinking_maps_to_reasoning_effort_only_for_reasoning_models(tgw, upstream, client):
    upstream.handler = lambda r: json_reply(openai_chat_json([("thinking", "deep"), ("text", "42")]))
    raw = client.messages.with_raw_response.create(model="o4-mini", max_tokens=20000, messages=HI,
                                                   thinking={"type": "enabled", "budget_tokens": 10000})
    msg = raw.parse()
    assert msg.content[0].type == "thinking" and msg.content[0].thinking == "deep"
    assert sent(upstream)["reasoning_effort"] == "high" and sent(upstream)["max_completion_tokens"] == 20000
    assert "x-fastgw-dropped-params" not in raw.headers
    raw = client.messages.with_raw_response.create(model=GPT, max_tokens=2000, messages=HI,
                                                   thinking={"type": "enabled", "budget_tokens": 1024})
    assert "reasoning_effort" not in sent(upstream)
    assert raw.headers["x-fastgw-dropped-params"] == "thinking"


def test_agent_only_fields_dropped_and_named(tgw, upstream):
    upstream.handler = lambda r: json_reply(openai_chat_json([("text", "ok")]))
    body = {"model": "claude-sonnet-4-5", "max_tokens": 5, "messages": HI,
            "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
            "output_config": {"effort": "high"},
            "tools": [WEATHER, {"type": "web_search_20250305", "name": "web_search", "max_uses": 3}]}
    resp = post(tgw.url, "/v1/messages", body)
    assert resp.status == 200
    assert resp.headers["x-fastgw-dropped-params"] == "context_management,web_search_20250305,output_config.effort"
    req = sent(upstream)
    assert [t["function"]["name"] for t in req["tools"]] == ["get_weather"]
    assert "context_management" not in req and "output_config" not in req
    text = request(tgw.url, "GET", "/metrics").body.decode()
    assert 'fastgw_dropped_params_total{param="context_management"}' in text


def test_unknown_fields_refused_or_dropped(tgw, upstream, client):
    upstream.handler = lambda r: json_reply(openai_chat_json([("text", "ok")]))
    resp = post(tgw.url, "/v1/messages", {"model": GPT, "max_tokens": 5, "messages": HI, "brand_new": 1})
    assert resp.status == 400
    err = resp.json()["error"]
    assert err["type"] == "invalid_request_error" and "brand_new" in err["message"]
    bad_block = {"model": GPT, "max_tokens": 5, "messages": [
        {"role": "user", "content": [{"type": "fancy_block", "x": 1}]}]}
    resp = post(tgw.url, "/v1/messages", bad_block)
    assert resp.status == 400 and "messages[0].content[0].type" in resp.json()["error"]["message"]
    resp = post(tgw.url, "/v1/messages", {**bad_block, "model": "lenient-model", "brand_new": 1,
                                          "messages": bad_block["messages"] + HI})
    assert resp.status == 200
    assert resp.headers["x-fastgw-dropped-params"] == "brand_new,messages[0].content[0].type"
    with pytest.raises(anthropic.BadRequestError):
        client.messages.create(model=GPT, max_tokens=5, messages=HI, extra_body={"top_k": 5})


def test_upstream_errors_become_anthropic_errors(tgw, upstream, client):
    err = {"error": {"message": "Rate limit reached", "type": "requests", "param": None, "code": "rate_limit"}}
    upstream.handler = lambda r: json_reply(json.dumps(err).encode(), status=429, headers=[("retry-after", "2")])
    with pytest.raises(anthropic.RateLimitError) as rl:
        client.messages.create(model=GPT, max_tokens=5, messages=HI)
    assert rl.value.body == {"type": "error", "error": {"type": "rate_limit_error", "message": "Rate limit reached"}}
    assert rl.value.response.headers["retry-after"] == "2"
    upstream.handler = lambda r: json_reply(b'{"error":{"message":"busy","type":"server_error"}}', status=503)
    resp = post(tgw.url, "/v1/messages", {"model": GPT, "max_tokens": 5, "messages": HI})
    assert resp.status == 529 and resp.json()["error"]["type"] == "overloaded_error"


def test_midstream_error_event(tgw, upstream):
    events = openai_chat_sse_events([("text", "Hello world and more")], piece=2)
    events = [*events[:4], b'data: {"error":{"message":"boom","type":"server_error"}}\n\n']
    upstream.handler = lambda r: sse_reply(events)
    resp = post(tgw.url, "/v1/messages", {"model": GPT, "max_tokens": 5, "messages": HI, "stream": True})
    last = resp.body.decode().strip().split("\n\n")[-1]
    assert last.startswith("event: error\n")
    assert json.loads(last.split("data: ", 1)[1]) == {"type": "error", "error": {"type": "api_error",
                                                                                  "message": "boom"}}
    upstream.handler = lambda r: Reply(headers=[("content-type", "text/event-stream")],
                                       chunks=openai_chat_sse_events([("text", "abcdefgh")], piece=1), drop_after=4)
    resp = post(tgw.url, "/v1/messages", {"model": GPT, "max_tokens": 5, "messages": HI, "stream": True})
    assert resp.body.decode().strip().split("\n\n")[-1].startswith("event: error\n")


def test_count_tokens_estimated(tgw, client):
    result = client.messages.count_tokens(model=GPT, messages=[{"role": "user", "content": "x" * 400}])
    assert 90 <= result.input_tokens <= 130


# -- to a Gemini provider (chained through chat) ---------------------------------------------


def test_gemini_sync_and_stream(tgw, upstream, client):
    upstream.handler = lambda r: json_reply(gemini_json([("text", "Ciao")]))
    msg = client.messages.create(model=GEMINI, max_tokens=30, system="Be brief.", messages=HI)
    assert msg.content[0].text == "Ciao" and msg.usage.output_tokens == 5
    got = upstream.requests[-1]
    assert got.target == f"/v1beta/models/{GEMINI}:generateContent" and got.headers["x-goog-api-key"] == "k-gemini"
    assert sent(upstream)["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    script = [("thinking", "Think."), ("text", "Answer"), ("tool", "get_weather", {"city": "Oslo"})]
    upstream.handler = lambda r: gemini_stream(gemini_sse(script, thoughts_tokens=4))

    async def run() -> Any:
        aclient = anthropic.AsyncAnthropic(base_url=tgw.url, api_key="k", max_retries=0)
        async with aclient.messages.stream(model=GEMINI, max_tokens=3000, messages=HI, tools=[WEATHER],
                                           thinking={"type": "enabled", "budget_tokens": 2000}) as stream:
            final = await stream.get_final_message()
        await aclient.close()
        return final

    final = asyncio.run(run())
    assert [b.type for b in final.content] == ["thinking", "text", "tool_use"]
    assert final.content[2].input == {"city": "Oslo"} and final.stop_reason == "tool_use"
    req = sent(upstream)
    assert upstream.requests[-1].target.endswith(":streamGenerateContent?alt=sse")
    assert req["generationConfig"]["thinkingConfig"] == {"thinkingBudget": 1024, "includeThoughts": True}


def test_gemini_thought_signature_survives_the_round_trip(tgw, upstream, client):
    answer = json.dumps({"candidates": [{"content": {"role": "model", "parts": [
        {"functionCall": {"name": "get_weather", "args": {"city": "Oslo"}, "id": "fc1"},
         "thoughtSignature": "U0lH"}]}, "finishReason": "STOP", "index": 0}],
        "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 2}}).encode()
    upstream.handler = lambda r: json_reply(answer)
    msg = client.messages.create(model=GEMINI, max_tokens=30, messages=HI, tools=[WEATHER])
    call = msg.content[0]
    assert call.type == "tool_use" and call.input == {"city": "Oslo"}
    upstream.handler = lambda r: json_reply(gemini_json([("text", "Cold.")]))
    client.messages.create(model=GEMINI, max_tokens=30, tools=[WEATHER], messages=[
        *HI, {"role": "assistant", "content": [call.model_dump()]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "-5C"}]}])
    contents = sent(upstream)["contents"]
    assert contents[1]["parts"][0] == {"functionCall": {"name": "get_weather", "args": {"city": "Oslo"},
                                                        "id": "fc1"}, "thoughtSignature": "U0lH"}
    assert contents[2]["parts"][0]["functionResponse"]["id"] == "fc1"


def test_gemini_error(tgw, upstream, client):
    upstream.handler = lambda r: json_reply(gemini_error(429, "RESOURCE_EXHAUSTED", "quota"), status=429)
    with pytest.raises(anthropic.RateLimitError) as rl:
        client.messages.create(model=GEMINI, max_tokens=5, messages=HI)
    assert rl.value.body["error"]["type"] == "rate_limit_error"
