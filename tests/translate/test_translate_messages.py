"""The Anthropic door's translators (pure): Messages request -> chat, chat answers and streams ->
Messages, any split of the upstream bytes; and the fidelity fixes on the OpenAI side (Anthropic
signature_delta in streams, Responses namespace tools)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from chat_stream import events as chat_events
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.wire import anthropic_sse, openai_chat_json, openai_chat_sse
from fastgw.translate import anthropic
from fastgw.translate.errors import TranslationError
from fastgw.translate.messages import chat_to_message, from_openai_error
from fastgw.translate.messages_request import to_chat
from fastgw.translate.messages_stream import MessagesStream
from fastgw.translate.responses import chat_to_responses, responses_to_chat


def sse(body: bytes) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for block in body.decode().split("\n\n"):
        if block.strip():
            lines = dict(line.split(": ", 1) for line in block.split("\n"))
            out.append((lines["event"], json.loads(lines["data"])))
    return out


def base(**kw: Any) -> dict[str, Any]:
    return {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}], **kw}


def test_request_content_blocks():
    chat, dropped = to_chat(base(messages=[
        {"role": "user", "content": [
            {"type": "image", "source": {"type": "url", "url": "https://x/a.png"}},
            {"type": "document", "title": "r.pdf", "source": {"type": "base64", "media_type": "application/pdf",
                                                             "data": "JVBE"}},
            {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "plain"}}]},
        {"role": "system", "content": "Mid-conversation rule."},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": [
            {"type": "text", "text": "see"}, {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                                                         "data": "AA"}}]}]},
    ]), target="openai")
    assert dropped == []
    assert chat["messages"] == [
        {"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "https://x/a.png"}},
            {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBE", "filename": "r.pdf"}},
            {"type": "text", "text": "plain"}]},
        {"role": "system", "content": "Mid-conversation rule."},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "t1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "t1", "content": "see"},
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}}]},
    ]


def test_request_rules():
    with pytest.raises(TranslationError) as exc:
        to_chat({"model": "m", "messages": [{"role": "user", "content": "x"}]}, target="openai")
    assert exc.value.param == "max_tokens"
    with pytest.raises(TranslationError) as exc:
        to_chat(base(top_k=3), target="openai")
    assert exc.value.param == "top_k"
    chat, _ = to_chat(base(top_k=3), target="gemini")
    assert chat["top_k"] == 3
    chat, dropped = to_chat(base(output_config={"format": {"type": "json_schema", "schema": {"type": "object"}}},
                                 service_tier="auto"), target="openai")
    assert chat["response_format"]["json_schema"]["schema"] == {"type": "object"} and dropped == ["service_tier"]
    chat, _ = to_chat(base(thinking={"type": "adaptive"}, output_config={"effort": "max"}), target="openai")
    assert chat["reasoning_effort"] == "high"
    chat, _ = to_chat(base(tool_choice={"type": "tool", "name": "f"},
                           tools=[{"name": "f", "input_schema": {"type": "object"}}]), target="openai")
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "f"}}


def test_chat_answer_to_message():
    body, usage = chat_to_message(openai_chat_json([("thinking", "t"), ("text", "x"), ("tool", "f", {"a": 1})],
                                                   usage={"prompt_tokens": 50, "completion_tokens": 7,
                                                          "prompt_tokens_details": {"cached_tokens": 30,
                                                                                    "cache_write_tokens": 5}}),
                                  model="alias")
    msg = json.loads(body)
    assert [b["type"] for b in msg["content"]] == ["thinking", "text", "tool_use"]
    assert msg["content"][2]["input"] == {"a": 1} and msg["stop_reason"] == "tool_use" and msg["model"] == "alias"
    assert msg["usage"] == {"input_tokens": 15, "cache_creation_input_tokens": 5, "cache_read_input_tokens": 30,
                            "output_tokens": 7}
    assert (usage.prompt_tokens, usage.cached_tokens, usage.cache_write_tokens) == (50, 30, 5)
    status, err = from_openai_error(400, b'{"error":{"message":"bad sk-abcdefghijklmnop","type":"x"}}')
    assert status == 400 and json.loads(err) == {"type": "error", "error": {
        "type": "invalid_request_error", "message": "bad [redacted]"}}


SCRIPT = [("thinking", "Reason it out."), ("text", "Hello, wörld! 👋"), ("tool", "f", {"q": "a b", "n": [1, 2]}),
          ("tool", "g", {})]
UPSTREAM = openai_chat_sse(SCRIPT, piece=3)


def translate(chunks: list[bytes]) -> bytes:
    t = MessagesStream(model="m")
    return b"".join(t.feed(c) for c in chunks) + t.close()


def test_stream_sequence():
    evs = sse(translate([UPSTREAM]))
    names = [n for n, _ in evs]
    assert names[:2] == ["message_start", "ping"] and names[-2:] == ["message_delta", "message_stop"]
    starts = [e["content_block"]["type"] for n, e in evs if n == "content_block_start"]
    assert starts == ["thinking", "text", "tool_use", "tool_use"]
    assert names.count("content_block_stop") == 4
    delta = evs[-2][1]
    assert delta["delta"]["stop_reason"] == "tool_use" and delta["usage"]["output_tokens"] == 5


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=len(UPSTREAM) - 1), max_size=30))
def test_any_split_gives_the_same_stream(cuts):
    cuts = sorted(set(cuts))
    pieces = [UPSTREAM[a:b] for a, b in zip([0, *cuts], [*cuts, len(UPSTREAM)], strict=True)]
    assert sse(translate(pieces)) == sse(translate([UPSTREAM]))


def test_openai_door_stream_keeps_thinking_signatures():
    t = anthropic.StreamTranslator(model="m", include_usage=False)
    out = t.feed(anthropic_sse([("thinking", "abcdefgh"), ("text", "hi")], piece=3)) + t.close()
    blocks = [c["choices"][0]["delta"]["thinking_blocks"] for c in chat_events(out)
              if c != "[DONE]" and "thinking_blocks" in c["choices"][0]["delta"]]
    assert blocks == [[{"type": "thinking", "thinking": "abcdefgh", "signature": "c2lnbmF0dXJl"}]]


def test_responses_namespace_tools_round_trip():
    request = {"model": "m", "input": [
        {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "Rules."}]},
        {"type": "function_call", "call_id": "c1", "name": "spawn", "namespace": "agents", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "ok"}],
        "tools": [{"type": "function", "name": "exec", "parameters": {}},
                  {"type": "namespace", "name": "agents", "tools": [
                      {"type": "function", "name": "spawn", "parameters": {}},
                      {"type": "function", "name": "exec", "parameters": {}}]},
                  {"type": "web_search"}],
        "include": ["reasoning.encrypted_content"], "prompt_cache_key": "k", "client_metadata": {"a": "b"}}
    dropped: list[str] = []
    chat = responses_to_chat(request, dropped)
    assert dropped == ["include", "prompt_cache_key", "client_metadata", "web_search"]
    assert [t["function"]["name"] for t in chat["tools"]] == ["exec", "spawn", "agents__exec"]
    assert chat["messages"][0] == {"role": "developer", "content": "Rules."}
    assert chat["messages"][1]["tool_calls"][0]["function"]["name"] == "spawn"
    answer = openai_chat_json([("tool", "agents__exec", {"cmd": "ls"}), ("tool", "exec", {})])
    items = json.loads(chat_to_responses(answer, model="m", request=request))["output"]
    assert [(i["name"], i.get("namespace")) for i in items] == [("exec", "agents"), ("exec", None)]
