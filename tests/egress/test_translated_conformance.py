"""Every recorded Anthropic / Gemini exchange of the conformance corpus, replayed by the test
upstream and fetched THROUGH a real gateway over HTTP.

What the client receives is validated against the OpenAI OpenAPI schemas (every chunk,
every body, every error, every Responses event), and its text, reasoning, tool calls and
finish reason are checked against expectations derived independently from the recording
(the helpers of ``tests/translate/test_translate_conformance.py``). Skipped when the corpus
is absent.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import conformance
import pytest
from conftest import CLAUDE, GEMINI, translated_config
from gateway import GatewayProcess
from rawhttp import post
from upstream_server import Reply, UpstreamServer, json_reply

if not conformance.manifest():
    pytest.skip("conformance corpus not found (set FASTGW_CONFORMANCE_DIR)", allow_module_level=True)

sys.path.insert(0, str(Path(__file__).parents[1] / "translate"))

import test_translate_conformance as expect
from chat_stream import accumulate, events

MODEL = {"anthropic": CLAUDE, "gemini": GEMINI}

STREAMS = [e["id"] for e in conformance.manifest()
           if e["provider"] in ("anthropic", "gemini") and e["stream"] and e["status"] == 200]
BODIES = [e["id"] for e in conformance.manifest()
          if e["provider"] in ("anthropic", "gemini") and not e["stream"] and e["status"] == 200
          and e["api"] in ("messages", "generateContent")]
ERRORS = [e["id"] for e in conformance.manifest() if e["provider"] in ("anthropic", "gemini") and e["status"] >= 400]


@pytest.fixture(scope="module")
def tgw(upstream_server: UpstreamServer) -> Iterator[GatewayProcess]:
    gw = GatewayProcess(translated_config(upstream_server.url))
    yield gw
    gw.stop()


def replay(e: dict[str, Any], piece: int = 700) -> Reply:
    """The recording as the provider sent it, in ``piece``-byte chunks (any split must work)."""
    raw = conformance.replay_bytes(e)
    ctype = e.get("content_type") or "text/event-stream"
    if e["provider"] == "gemini" and e["stream"] and not ctype.startswith("application/json"):
        ctype = "text/event-stream"
    chunks = [raw[i:i + piece] for i in range(0, len(raw), piece)]
    return Reply(status=e["status"], headers=[("content-type", ctype)], chunks=chunks)


def validate_sse(body: bytes) -> None:
    chunk_v = conformance.validator("CreateChatCompletionStreamResponse")
    err_v = conformance.validator("ErrorResponse")
    for ev in events(body):
        if ev != "[DONE]":
            (err_v if "error" in ev else chunk_v).validate(ev)


def want_of(e: dict[str, Any]) -> dict[str, Any]:
    """Text, reasoning, tools [(name, parsed args)] and finish reason, from the recording itself."""
    if e["provider"] == "anthropic":
        w = expect.anthropic_expect(conformance.replay_bytes(e))
        w["tools"] = [(name, expect.parse_args(args)) for name, args in w["tools"]]
        return w
    w = expect.gemini_expect(expect.gemini_payloads(e))
    w["tools"] = [(name, args) for name, args in w["tools"]]
    return w


@pytest.mark.parametrize("entry_id", STREAMS)
def test_stream_through_gateway(tgw, upstream, entry_id):
    e = expect.entry(entry_id)
    upstream.handler = lambda r: replay(e)
    model = MODEL[e["provider"]]
    resp = post(tgw.url, "/v1/chat/completions", {"model": model, "messages": [{"role": "user", "content": "x"}],
                                                  "stream": True, "stream_options": {"include_usage": True}})
    assert resp.status == 200 and resp.headers["content-type"] == "text/event-stream"
    validate_sse(resp.body)
    acc = accumulate(resp.body)
    want = want_of(e)
    assert acc.c0.text == want["text"]
    assert acc.c0.reasoning == want["reasoning"]
    got = [(tc["name"], expect.parse_args(tc["arguments"])) for _, tc in sorted(acc.c0.tools.items())]
    assert got == want["tools"]
    assert acc.c0.finish_reason == want["finish"]
    assert acc.done and acc.error is None and acc.usage is not None
    assert acc.usage["total_tokens"] == acc.usage["prompt_tokens"] + acc.usage["completion_tokens"]
    assert all(c["model"] == model for c in acc.chunks)


@pytest.mark.parametrize("entry_id", STREAMS)
def test_stream_as_responses_events(tgw, upstream, entry_id):
    e = expect.entry(entry_id)
    upstream.handler = lambda r: replay(e, piece=333)
    resp = post(tgw.url, "/v1/responses", {"model": MODEL[e["provider"]], "input": "x", "stream": True})
    assert resp.status == 200 and resp.headers["content-type"] == "text/event-stream"
    kinds, final = [], None
    for block in resp.body.decode().split("\n\n"):
        if not block:
            continue
        head, data = block.split("\n", 1)
        ev = json.loads(data.removeprefix("data: "))
        assert head == "event: " + ev["type"]
        conformance.response_event_validator(ev["type"]).validate(ev)
        kinds.append(ev["type"])
        if ev["type"] in ("response.completed", "response.incomplete"):
            final = ev["response"]
    assert kinds[0] == "response.created" and final is not None and kinds[-1] == "response." + final["status"]
    want = want_of(e)
    text = "".join(c["text"] for item in final["output"] if item["type"] == "message"
                   for c in item["content"] if c["type"] == "output_text")
    assert text == want["text"]
    calls = [(item["name"], expect.parse_args(item["arguments"])) for item in final["output"]
             if item["type"] == "function_call"]
    assert calls == want["tools"]


@pytest.mark.parametrize("entry_id", BODIES)
def test_body_through_gateway(tgw, upstream, entry_id):
    e = expect.entry(entry_id)
    upstream.handler = lambda r: replay(e, piece=1 << 20)
    resp = post(tgw.url, "/v1/chat/completions", {"model": MODEL[e["provider"]],
                                                  "messages": [{"role": "user", "content": "x"}]})
    assert resp.status == 200 and resp.headers["content-type"] == "application/json"
    out = resp.json()
    conformance.validator("CreateChatCompletionResponse").validate(out)
    src = json.loads(conformance.read(conformance.response_file(e)))
    if e["provider"] == "anthropic":
        want = {"text": "".join(b["text"] for b in src["content"] if b["type"] == "text"),
                "tools": [(b["name"], b["input"]) for b in src["content"] if b["type"] == "tool_use"]}
    else:
        want = want_of(e)
    choice = out["choices"][0]
    msg = choice["message"]
    assert (msg["content"] or "") == want["text"]
    got = [(t["function"]["name"], json.loads(t["function"]["arguments"])) for t in msg.get("tool_calls", [])]
    assert got == want["tools"]
    if e["provider"] == "anthropic":
        assert choice["finish_reason"] == expect.ANTHROPIC_FINISH[src["stop_reason"]]
        assert out["usage"]["completion_tokens"] == src["usage"]["output_tokens"]
    else:
        assert msg.get("reasoning_content", "") == want["reasoning"]
        blocked = "promptFeedback" in src
        assert choice["finish_reason"] == ("content_filter" if blocked else want["finish"])


@pytest.mark.parametrize("entry_id", ERRORS)
def test_error_through_gateway(tgw, upstream, entry_id):
    e = expect.entry(entry_id)
    upstream.handler = lambda r: replay(e, piece=1 << 20)
    resp = post(tgw.url, "/v1/chat/completions", {"model": MODEL[e["provider"]],
                                                  "messages": [{"role": "user", "content": "x"}]})
    assert resp.status == e["status"]
    conformance.validator("ErrorResponse").validate(resp.json())
    src = json.loads(conformance.read(conformance.response_file(e)))
    assert resp.error()["message"] == src["error"]["message"]


def test_embeddings_through_gateway(tgw, upstream):
    e = expect.entry("pai-gemini-batch-embed")
    raw = conformance.read(conformance.response_file(e))
    upstream.handler = lambda r: json_reply(raw)
    resp = post(tgw.url, "/v1/embeddings", {"model": GEMINI, "input": ["a", "b"]})
    assert resp.status == 200
    out = resp.json()
    conformance.validator("CreateEmbeddingResponse").validate(out)
    assert [d["embedding"] for d in out["data"]] == [v["values"] for v in json.loads(raw)["embeddings"]]
