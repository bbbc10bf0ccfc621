"""Recorded provider traffic (shared/conformance, read in place) on the Anthropic front door.

* Every recorded Anthropic stream and body goes through ``/v1/messages`` of a real gateway to an
  Anthropic upstream replaying it: the client receives the very same bytes and status.
* Every recorded OpenAI chat stream and Gemini stream is translated into an Anthropic event
  sequence, which the ``anthropic`` SDK's own stream accumulator turns into the final message
  expected from the recording (text, thinking, tool calls with their full arguments, stop
  reason, output tokens) -- the expectation folded here independently from the recording.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import conformance
import pytest
from anthropic.lib.streaming._messages import accumulate_event
from gateway import GatewayProcess
from rawhttp import post
from upstream_server import Reply, UpstreamServer

from fastgw.translate import gemini
from fastgw.translate.messages import stop_reason
from fastgw.translate.messages_stream import MessagesStream

if not conformance.manifest():
    pytest.skip("conformance corpus not found (set FASTGW_CONFORMANCE_DIR)", allow_module_level=True)

ANTHROPIC = [e["id"] for e in conformance.entries("anthropic", api="messages")]
OPENAI_STREAMS = [e["id"] for e in conformance.entries("openai", api="chat.completions", stream=True)]
GEMINI_STREAMS = [e["id"] for e in conformance.entries("gemini", api="streamGenerateContent")]


def entry(entry_id: str) -> dict[str, Any]:
    return next(e for e in conformance.manifest() if e["id"] == entry_id)


@pytest.fixture(scope="module")
def cgw(upstream_server: UpstreamServer) -> Iterator[GatewayProcess]:
    gw = GatewayProcess(f"""
providers:
  - name: claude
    type: anthropic
    base_url: {upstream_server.url}
    api_key: k-anthropic
    models: ["*"]
""")
    yield gw
    gw.stop()


@pytest.mark.parametrize("entry_id", ANTHROPIC)
def test_anthropic_recording_relayed_byte_for_byte(cgw, upstream, entry_id):
    e = entry(entry_id)
    raw = conformance.replay_bytes(e)
    chunks = [raw[i:i + 700] for i in range(0, len(raw), 700)] or [b""]
    upstream.handler = lambda r: Reply(status=e["status"], headers=[("content-type", e["content_type"])],
                                       chunks=chunks, content_length=not e["stream"])
    body = conformance.request_body(e) or {"model": "claude-haiku-4-5", "max_tokens": 64,
                                           "messages": [{"role": "user", "content": "hi"}], "stream": e["stream"]}
    sent = json.dumps(body).encode()
    resp = post(cgw.url, "/v1/messages", sent, {"anthropic-version": "2023-06-01"})
    assert resp.status == e["status"]
    assert resp.body == raw
    assert upstream.requests[-1].body == sent


# -- translated streams through the SDK's accumulator ---------------------------------------


def expected_from_chat(raw: bytes) -> dict[str, Any]:
    """Choice 0 of a chat chunk stream, folded from its own events."""
    text, thinking, finish, usage, refused = "", "", None, None, False
    tools: dict[int, dict[str, str]] = {}
    error = None
    for block in raw.decode().replace("\r\n", "\n").split("\n\n"):
        data = "\n".join(line[5:].strip() for line in block.split("\n") if line.startswith("data:"))
        if not data or data == "[DONE]":
            continue
        ev = json.loads(data)
        if "error" in ev:
            error = ev["error"]
            break
        if ev.get("usage"):
            usage = ev["usage"]
        for ch in ev.get("choices") or ():
            if ch.get("index", 0) != 0:
                continue
            d = ch.get("delta") or {}
            text += (d.get("content") or "") + (d.get("refusal") or "")
            refused = refused or bool(d.get("refusal"))
            thinking += d.get("reasoning_content") or d.get("reasoning") or ""
            for tc in d.get("tool_calls") or ():
                slot = tools.setdefault(tc.get("index", 0), {"name": "", "arguments": ""})
                fn = tc.get("function") or {}
                slot["name"] = slot["name"] or fn.get("name") or ""
                slot["arguments"] += fn.get("arguments") or ""
            if ch.get("finish_reason"):
                finish = ch["finish_reason"]
    calls = [(t["name"], json.loads(t["arguments"]) if t["arguments"].strip() else {})
             for _, t in sorted(tools.items())]
    reason = stop_reason(finish or ("tool_calls" if calls else "stop"))
    return {"text": text, "thinking": thinking, "calls": calls, "error": error,
            "stop_reason": "refusal" if refused and reason == "end_turn" else reason,
            "output_tokens": int((usage or {}).get("completion_tokens") or 0)}


def sdk_final(anthropic_sse: bytes) -> tuple[Any, dict[str, Any] | None]:
    """The SDK's accumulated message (and an error event's error, if one ended the stream)."""
    snapshot = None
    json_bufs: dict[int, bytes] = {}
    names = []
    for block in anthropic_sse.decode().split("\n\n"):
        if not block.strip():
            continue
        lines = dict(line.split(": ", 1) for line in block.split("\n"))
        event = json.loads(lines["data"])
        names.append(lines["event"])
        assert event.get("type") == lines["event"]
        if event["type"] == "error":
            return snapshot, event["error"]
        if event["type"] == "ping":
            continue
        snapshot = accumulate_event(event=event, current_snapshot=snapshot, json_bufs=json_bufs)
    assert names[:2] == ["message_start", "ping"] and names[-2:] == ["message_delta", "message_stop"]
    return snapshot, None


def check(final: Any, error: dict[str, Any] | None, expected: dict[str, Any]) -> None:
    if expected["error"] is not None:
        assert error is not None and error["message"]
        return
    assert error is None
    text = "".join(b.text for b in final.content if b.type == "text")
    thinking = "".join(b.thinking for b in final.content if b.type == "thinking")
    calls = [(b.name, b.input) for b in final.content if b.type == "tool_use"]
    assert (text, thinking, calls) == (expected["text"], expected["thinking"], expected["calls"])
    assert final.stop_reason == expected["stop_reason"]
    assert final.usage.output_tokens == expected["output_tokens"]


@pytest.mark.parametrize("entry_id", OPENAI_STREAMS)
def test_openai_recording_translated(entry_id: str) -> None:
    raw = conformance.replay_bytes(entry(entry_id))
    t = MessagesStream(model="m")
    out = b"".join(t.feed(raw[i:i + 97]) for i in range(0, len(raw), 97)) + t.close()
    check(*sdk_final(out), expected_from_chat(raw))


@pytest.mark.parametrize("entry_id", GEMINI_STREAMS)
def test_gemini_recording_translated(entry_id: str) -> None:
    e = entry(entry_id)
    raw = conformance.replay_bytes(e)
    framing = "json-array" if e["content_type"].startswith("application/json") else "sse"
    g = gemini.StreamTranslator(model="m", include_usage=True, framing=framing)
    chat = b"".join(g.feed(raw[i:i + 61]) for i in range(0, len(raw), 61)) + g.close()
    t = MessagesStream(model="m")
    out = t.feed(chat) + t.close()
    check(*sdk_final(out), expected_from_chat(chat))
