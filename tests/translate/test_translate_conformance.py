"""Recorded Anthropic / Gemini traffic (shared/conformance, read in place) through the translators.

Every output chunk / body is validated against the OpenAI OpenAPI schemas, and the
text, reasoning, tool calls and finish reason are checked against expectations
computed here, independently, from the recording's own events.
"""

from __future__ import annotations

import json
from typing import Any

import conformance
import pytest
from chat_stream import accumulate, events, normalized
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastgw.translate import anthropic, gemini

STREAMS_A = [e["id"] for e in conformance.entries("anthropic", stream=True)]
BODIES_A = [e["id"] for e in conformance.entries("anthropic", stream=False) if e["status"] == 200]
STREAMS_G = [e["id"] for e in conformance.entries("gemini", api="streamGenerateContent")]
BODIES_G = [e["id"] for e in conformance.entries("gemini", api="generateContent") if e["status"] == 200]
ERRORS = [
    e["id"] for e in conformance.manifest() if e["provider"] in ("anthropic", "gemini") and e["status"] >= 400
]

if not conformance.manifest():
    pytest.skip("conformance corpus not found (set FASTGW_CONFORMANCE_DIR)", allow_module_level=True)


def entry(entry_id: str) -> dict[str, Any]:
    return next(e for e in conformance.manifest() if e["id"] == entry_id)


def validate_chunks(sse: bytes) -> None:
    chunk_v = conformance.validator("CreateChatCompletionStreamResponse")
    err_v = conformance.validator("ErrorResponse")
    for ev in events(sse):
        if ev == "[DONE]":
            continue
        (err_v if "error" in ev else chunk_v).validate(ev)


def test_schema_loader_really_validates() -> None:
    v = conformance.validator("CreateChatCompletionStreamResponse")
    good = {
        "id": "x",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "usage": None,
        "choices": [],
    }
    v.validate(good)
    bad = dict(good, choices=[{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "finished"}])
    assert list(v.iter_errors(bad)), "an invalid finish_reason must be rejected"
    assert list(v.iter_errors(dict(good, object="chat.completion"))), "object is checked"


# -- independent expectations ----------------------------------------------------------

ANTHROPIC_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


def anthropic_payloads(raw: bytes) -> list[dict[str, Any]]:
    text = raw.decode().replace("\r\n", "\n")
    out = []
    for block in text.split("\n\n"):
        data = [line[5:].strip() for line in block.split("\n") if line.startswith("data:")]
        if data:
            out.append(json.loads("\n".join(data)))
    return out


def anthropic_expect(raw: bytes) -> dict[str, Any]:
    kinds: dict[int, str] = {}
    text, reasoning = "", ""
    tools: list[list[str]] = []
    tool_of: dict[int, int] = {}
    finish = None
    for p in anthropic_payloads(raw):
        if p["type"] == "content_block_start":
            kinds[p["index"]] = p["content_block"]["type"]
            if kinds[p["index"]] == "tool_use":
                tool_of[p["index"]] = len(tools)
                tools.append([p["content_block"]["name"], ""])
        elif p["type"] == "content_block_delta":
            d = p["delta"]
            kind = kinds[p["index"]]
            if d["type"] == "text_delta" and kind == "text":
                text += d["text"]
            elif d["type"] == "thinking_delta":
                reasoning += d["thinking"]
            elif d["type"] == "input_json_delta" and kind == "tool_use":
                tools[tool_of[p["index"]]][1] += d["partial_json"]
        elif p["type"] == "message_delta":
            finish = ANTHROPIC_FINISH[p["delta"]["stop_reason"]]
    return {"text": text, "reasoning": reasoning, "tools": tools, "finish": finish}


def parse_args(s: str) -> Any:
    try:
        return json.loads(s or "{}")
    except json.JSONDecodeError:
        return ("unparseable", s)


def gemini_payloads(e: dict[str, Any]) -> list[dict[str, Any]]:
    name = conformance.response_file(e)
    raw = conformance.read(name)
    if name.endswith(".json-array-stream.txt"):
        return json.loads(raw)
    if name.endswith(".response.json"):
        return [json.loads(raw)]
    return [p for p in anthropic_payloads(conformance.replay_bytes(e))]


def gemini_expect(payloads: list[dict[str, Any]]) -> dict[str, Any]:
    text, reasoning = "", ""
    tools: list[list[Any]] = []
    finish = None
    for p in payloads:
        for cand in p.get("candidates") or ():
            for part in (cand.get("content") or {}).get("parts") or ():
                if "functionCall" in part:
                    fc = part["functionCall"]
                    if "name" in fc:
                        tools.append([fc["name"], dict(fc.get("args") or {})])
                    for pa in fc.get("partialArgs") or ():
                        key = pa["jsonPath"].removeprefix("$.")
                        tools[-1][1][key] = tools[-1][1].get(key, "") + pa.get("stringValue", "")
                elif part.get("thought"):
                    reasoning += part.get("text", "")
                else:
                    text += part.get("text", "")
            if cand.get("finishReason"):
                finish = {"STOP": "stop", "MAX_TOKENS": "length", "SAFETY": "content_filter"}[
                    cand["finishReason"]
                ]
    if finish == "stop" and tools:
        finish = "tool_calls"
    return {"text": text, "reasoning": reasoning, "tools": [tuple(t) for t in tools], "finish": finish}


# -- Anthropic ---------------------------------------------------------------------------


@pytest.mark.parametrize("entry_id", STREAMS_A)
def test_anthropic_stream(entry_id: str) -> None:
    raw = conformance.replay_bytes(entry(entry_id))
    t = anthropic.StreamTranslator(model="client-model", include_usage=True)
    out = t.feed(raw) + t.close()
    validate_chunks(out)
    acc = accumulate(out)
    want = anthropic_expect(raw)
    assert acc.c0.text == want["text"]
    assert acc.c0.reasoning == want["reasoning"]
    got = [(tc["name"], parse_args(tc["arguments"])) for _, tc in sorted(acc.c0.tools.items())]
    assert got == [(name, parse_args(args)) for name, args in want["tools"]]
    assert acc.c0.finish_reason == want["finish"]
    assert acc.done and t.complete and acc.usage is not None
    assert acc.usage["total_tokens"] == acc.usage["prompt_tokens"] + acc.usage["completion_tokens"] > 0
    assert all(c["model"] == "client-model" for c in acc.chunks)


@pytest.mark.parametrize("entry_id", BODIES_A)
def test_anthropic_body(entry_id: str) -> None:
    e = entry(entry_id)
    raw = conformance.read(conformance.response_file(e))
    out = json.loads(anthropic.translate_response(raw, model="client-model"))
    conformance.validator("CreateChatCompletionResponse").validate(out)
    src = json.loads(raw)
    msg = out["choices"][0]["message"]
    assert msg["content"] == ("".join(b["text"] for b in src["content"] if b["type"] == "text") or None)
    want_tools = [(b["id"], b["name"], b["input"]) for b in src["content"] if b["type"] == "tool_use"]
    got_tools = [
        (t["id"], t["function"]["name"], json.loads(t["function"]["arguments"]))
        for t in msg.get("tool_calls", [])
    ]
    assert got_tools == want_tools
    assert out["choices"][0]["finish_reason"] == ANTHROPIC_FINISH[src["stop_reason"]]
    assert out["usage"]["completion_tokens"] == src["usage"]["output_tokens"]


# -- Gemini --------------------------------------------------------------------------------


def gemini_stream(e: dict[str, Any], raw: bytes | None = None) -> tuple[Any, bytes]:
    name = conformance.response_file(e)
    framing = "json-array" if name.endswith(".json-array-stream.txt") else "sse"
    t = gemini.StreamTranslator(model="client-model", include_usage=True, framing=framing)
    raw = conformance.replay_bytes(e) if raw is None else raw
    return t, t.feed(raw) + t.close()


@pytest.mark.parametrize("entry_id", STREAMS_G)
def test_gemini_stream(entry_id: str) -> None:
    e = entry(entry_id)
    t, out = gemini_stream(e)
    validate_chunks(out)
    acc = accumulate(out)
    want = gemini_expect(gemini_payloads(e))
    assert acc.c0.text == want["text"]
    assert acc.c0.reasoning == want["reasoning"]
    assert acc.tool_calls() == want["tools"]
    assert all(tc["id"] for tc in acc.c0.tools.values())
    assert acc.c0.finish_reason == want["finish"]
    assert acc.done and t.complete
    last_usage = next(p["usageMetadata"] for p in reversed(gemini_payloads(e)) if p.get("usageMetadata"))
    assert acc.usage["prompt_tokens"] == last_usage.get("promptTokenCount", 0)
    thoughts = last_usage.get("thoughtsTokenCount", 0)
    assert acc.usage["completion_tokens"] == last_usage.get("candidatesTokenCount", 0) + thoughts
    assert acc.usage["completion_tokens_details"]["reasoning_tokens"] == thoughts


@pytest.mark.parametrize("entry_id", BODIES_G)
def test_gemini_body(entry_id: str) -> None:
    e = entry(entry_id)
    out = json.loads(
        gemini.translate_response(conformance.read(conformance.response_file(e)), model="client-model")
    )
    conformance.validator("CreateChatCompletionResponse").validate(out)
    want = gemini_expect(gemini_payloads(e))
    msg = out["choices"][0]["message"]
    assert (msg["content"] or "") == want["text"]
    assert msg.get("reasoning_content", "") == want["reasoning"]
    got = [(t["function"]["name"], json.loads(t["function"]["arguments"])) for t in msg.get("tool_calls", [])]
    assert got == want["tools"]
    blocked = "promptFeedback" in json.loads(conformance.read(conformance.response_file(e)))
    assert out["choices"][0]["finish_reason"] == ("content_filter" if blocked else want["finish"])


def test_gemini_logprobs_body() -> None:
    e = entry("pai-vertex-logprobs")
    src = json.loads(conformance.read(conformance.response_file(e)))
    out = json.loads(gemini.translate_response(conformance.read(conformance.response_file(e)), model="m"))
    content = out["choices"][0]["logprobs"]["content"]
    chosen = src["candidates"][0]["logprobsResult"]["chosenCandidates"]
    assert [c["token"] for c in content] == [c["token"] for c in chosen]
    assert [c["logprob"] for c in content] == [c["logProbability"] for c in chosen]
    assert all(len(c["top_logprobs"]) == 5 for c in content)


def test_gemini_embeddings() -> None:
    e = entry("pai-gemini-batch-embed")
    raw = conformance.read(conformance.response_file(e))
    out = json.loads(gemini.translate_embeddings_response(raw, model="client-model", encoding_format="float"))
    conformance.validator("CreateEmbeddingResponse").validate(out)
    assert out["data"][0]["embedding"] == json.loads(raw)["embeddings"][0]["values"]
    b64 = json.loads(gemini.translate_embeddings_response(raw, model="m", encoding_format="base64"))
    assert (
        isinstance(b64["data"][0]["embedding"], str) and len(b64["data"][0]["embedding"]) == 4 * 768 * 4 // 3
    )


# -- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize("entry_id", ERRORS)
def test_error_bodies(entry_id: str) -> None:
    e = entry(entry_id)
    translate = anthropic.translate_error if e["provider"] == "anthropic" else gemini.translate_error
    status, body = translate(e["status"], conformance.read(conformance.response_file(e)))
    out = json.loads(body)
    conformance.validator("ErrorResponse").validate(out)
    assert status == e["status"]
    src = json.loads(conformance.read(conformance.response_file(e)))
    assert out["error"]["message"] == src["error"]["message"]


# -- split invariance (hypothesis) -----------------------------------------------------------

SPLIT_CASES = [i for i in STREAMS_A + STREAMS_G if i not in ("pai-anthropic-stream-pause-turn-web-search",)]


@pytest.mark.parametrize("entry_id", SPLIT_CASES)
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_split_same_output(entry_id: str, data: st.DataObject) -> None:
    e = entry(entry_id)
    raw = conformance.replay_bytes(e)
    if e["provider"] == "anthropic":
        whole = anthropic.StreamTranslator(model="m", include_usage=True)
        pieces = anthropic.StreamTranslator(model="m", include_usage=True)
    else:
        framing = "json-array" if conformance.response_file(e).endswith(".txt") else "sse"
        whole = gemini.StreamTranslator(model="m", include_usage=True, framing=framing)
        pieces = gemini.StreamTranslator(model="m", include_usage=True, framing=framing)
    expected = normalized(whole.feed(raw) + whole.close())
    cuts = sorted(set(data.draw(st.lists(st.integers(0, len(raw)), max_size=12))))
    if data.draw(st.booleans()):
        cuts = sorted(set(cuts) | set(range(0, len(raw), max(1, len(raw) // 40))))
    out = b""
    prev = 0
    for c in [*cuts, len(raw)]:
        out += pieces.feed(raw[prev:c])
        prev = c
    out += pieces.close()
    assert normalized(out) == expected


def test_byte_by_byte_anthropic_stream() -> None:
    raw = conformance.replay_bytes(entry("asdk-stream-text-then-tool-use"))
    whole = anthropic.StreamTranslator(model="m", include_usage=True)
    one = anthropic.StreamTranslator(model="m", include_usage=True)
    out = b"".join(one.feed(raw[i : i + 1]) for i in range(len(raw))) + one.close()
    assert normalized(out) == normalized(whole.feed(raw) + whole.close())
