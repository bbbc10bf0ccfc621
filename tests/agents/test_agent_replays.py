"""Coding agents' recorded requests replayed through every path of both doors: Claude Code's
``/v1/messages`` bodies and Codex's ``/v1/responses`` body (``tests/fixtures/agents``, recorded
from the real agents against a loopback capture server) sent to a real gateway whose providers
are of each type, with the test upstream answering in each provider's wire format."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import pytest
from conftest import GEMINI
from gateway import GatewayProcess
from rawhttp import post
from upstream_server import Received, Reply, UpstreamServer, sse_reply

from bench.wire import anthropic_sse, gemini_sse, openai_chat_sse, openai_responses

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "agents"
CLAUDE_TURNS = ["claude-code-first-turn.json", "claude-code-tool-result-turn.json"]


def fixture(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text())


@pytest.fixture(scope="module")
def agw(upstream_server: UpstreamServer) -> Iterator[GatewayProcess]:
    gw = GatewayProcess(f"""
providers:
  - name: claude
    type: anthropic
    base_url: {upstream_server.url}
    api_key: k-anthropic
    models: [claude-sonnet-4-5]
  - name: oai
    type: openai
    base_url: {upstream_server.url}/v1
    api_key: sk-oai
    models: [gpt-4o-mini, gpt-5]
  - name: gem
    type: gemini
    base_url: {upstream_server.url}
    api_key: k-gemini
    models: [{GEMINI}]
""")
    yield gw
    gw.stop()


def gemini_stream(body: bytes) -> Reply:
    return sse_reply([p + b"\r\n\r\n" for p in body.split(b"\r\n\r\n") if p])


def answer(script: list[tuple[Any, ...]]):  # type: ignore[no-untyped-def]
    """A handler answering a stream in the wire format of whichever provider was called."""

    def handler(r: Received) -> Reply:
        if r.target.startswith("/v1/messages"):
            return sse_reply(anthropic_sse(script))
        if r.target.startswith("/v1/chat/completions"):
            return sse_reply(openai_chat_sse(script))
        if r.target.startswith("/v1/responses"):
            rep = openai_responses("gpt-5", True, 3, 8)
            return sse_reply(b"".join(rep.prefix + rep.content + rep.suffix))
        return gemini_stream(gemini_sse(script))

    return handler


def events(body: bytes) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for block in body.decode().split("\n\n"):
        if block.strip():
            lines = dict(line.split(": ", 1) for line in block.split("\n"))
            out.append((lines.get("event", ""), json.loads(lines["data"])))
    return out


@pytest.mark.parametrize("turn", CLAUDE_TURNS)
def test_claude_code_bodies_relayed_unchanged_to_anthropic(agw, upstream, turn):
    rec = fixture(turn)
    raw = json.dumps(rec["body"]).encode()
    upstream.handler = answer([("text", "Done.")])
    resp = post(agw.url, rec["target"], raw, rec["headers"])
    assert resp.status == 200 and resp.headers["x-fastgw-path"] == "fast"
    got = upstream.requests[-1]
    assert got.body == raw and got.target == "/v1/messages?beta=true"
    assert got.headers["anthropic-beta"] == rec["headers"]["anthropic-beta"]
    assert resp.body == anthropic_sse([("text", "Done.")])


@pytest.mark.parametrize("turn", CLAUDE_TURNS)
@pytest.mark.parametrize("model", ["gpt-4o-mini", GEMINI])
def test_claude_code_bodies_translated(agw, upstream, turn, model):
    rec = fixture(turn)
    body = {**rec["body"], "model": model}
    upstream.handler = answer([("text", "Running it."), ("tool", "Bash", {"command": "echo hi"})])
    resp = post(agw.url, rec["target"], body, rec["headers"])
    assert resp.status == 200, resp.body[:500]
    dropped = resp.headers["x-fastgw-dropped-params"].split(",")
    assert "context_management" in dropped and "cache_control" in dropped
    evs = events(resp.body)
    assert evs[0][0] == "message_start" and evs[-1][0] == "message_stop"
    starts = [e["content_block"] for n, e in evs if n == "content_block_start"]
    assert starts[-1]["type"] == "tool_use" and starts[-1]["name"] == "Bash"
    sent = json.loads(upstream.requests[-1].body)
    if model == GEMINI:
        names = [d["name"] for d in sent["tools"][0]["functionDeclarations"]]
        assert len(sent["systemInstruction"]["parts"][0]["text"]) > 20000
    else:
        names = [t["function"]["name"] for t in sent["tools"]]
        assert sent["messages"][0]["role"] == "system" and len(sent["messages"][0]["content"]) > 20000
        assert sent["user"] == rec["body"]["metadata"]["user_id"]
    assert names == [t["name"] for t in rec["body"]["tools"]]
    if turn == "claude-code-tool-result-turn.json" and model != GEMINI:
        roles = [m["role"] for m in sent["messages"]]
        assert roles[-2:] == ["assistant", "tool"]
        assert sent["messages"][-2]["tool_calls"][0]["function"]["name"] == "Bash"


def test_claude_code_body_through_the_sdk_accumulator(agw, upstream):
    """What Claude Code's own client code would build from a translated stream."""
    rec = fixture("claude-code-tool-result-turn.json")
    body = {**rec["body"], "model": "gpt-4o-mini"}
    upstream.handler = answer([("thinking", "Look."), ("text", "hi"), ("tool", "Read", {"file_path": "/a"})])
    client = anthropic.Anthropic(base_url=agw.url, api_key="x", max_retries=0)
    known = {"model", "max_tokens", "messages", "system", "tools", "metadata", "thinking"}
    extra = {k: v for k, v in body.items() if k not in known and k != "stream"}
    with client.messages.stream(**{k: v for k, v in body.items() if k in known}, extra_body=extra) as stream:
        final = stream.get_final_message()
    assert [b.type for b in final.content] == ["thinking", "text", "tool_use"]
    assert final.content[2].input == {"file_path": "/a"} and final.stop_reason == "tool_use"


@pytest.mark.parametrize("model", ["claude-sonnet-4-5", GEMINI])
def test_codex_body_translated(agw, upstream, model):
    rec = fixture("codex-first-turn.json")
    body = {**rec["body"], "model": model}
    upstream.handler = answer([("text", "Spawning."), ("tool", "spawn_agent", {"task": "x"})])
    resp = post(agw.url, "/v1/responses", body)
    assert resp.status == 200, resp.body[:500]
    assert resp.headers["x-fastgw-dropped-params"].split(",") == [
        "include", "prompt_cache_key", "client_metadata", "web_search"]
    sent = json.loads(upstream.requests[-1].body)
    if model == GEMINI:
        names = [d["name"] for d in sent["tools"][0]["functionDeclarations"]]
        assert sent["systemInstruction"]["parts"][0]["text"].startswith("You are a coding agent")
    else:
        names = [t["name"] for t in sent["tools"]]
        assert sent["system"][0]["text"].startswith("You are a coding agent")
    assert "spawn_agent" in names and "exec_command" in names and "web_search" not in names
    done = [e for n, e in events(resp.body) if n == "response.output_item.done"]
    call = done[-1]["item"]
    assert call["type"] == "function_call"
    assert (call["name"], call["namespace"], json.loads(call["arguments"])) == ("spawn_agent", "multi_agent_v1",
                                                                               {"task": "x"})


def test_codex_body_relayed_unchanged_to_openai(agw, upstream):
    rec = fixture("codex-first-turn.json")
    raw = json.dumps({**rec["body"], "model": "gpt-5"}).encode()
    upstream.handler = answer([("text", "hi")])
    resp = post(agw.url, "/v1/responses", raw)
    assert resp.status == 200 and resp.headers["x-fastgw-path"] == "fast"
    assert upstream.requests[-1].body == raw


def long_conversation() -> dict[str, Any]:
    """Claude Code's recorded turn grown to four tool rounds (thinking, parallel calls, an error)."""
    body = json.loads(json.dumps(fixture("claude-code-tool-result-turn.json")["body"]))
    rounds = [
        ([{"type": "thinking", "thinking": "Read the file.", "signature": "c2ln"},
          {"type": "text", "text": "Reading."},
          {"type": "tool_use", "id": "toolu_r2", "name": "Read", "input": {"file_path": "/home/dev/a.py"}},
          {"type": "tool_use", "id": "toolu_r3", "name": "Read", "input": {"file_path": "/home/dev/b.py"}}],
         [{"type": "tool_result", "tool_use_id": "toolu_r2", "content": "print('a')"},
          {"type": "tool_result", "tool_use_id": "toolu_r3", "content": [{"type": "text", "text": "print('b')"}],
           "cache_control": {"type": "ephemeral"}}]),
        ([{"type": "tool_use", "id": "toolu_r4", "name": "Edit",
           "input": {"file_path": "/home/dev/a.py", "old_string": "a", "new_string": "c"}}],
         [{"type": "tool_result", "tool_use_id": "toolu_r4", "is_error": True, "content": "File changed on disk"},
          {"type": "text", "text": "try again"}]),
    ]
    for assistant, user in rounds:
        body["messages"] += [{"role": "assistant", "content": assistant}, {"role": "user", "content": user}]
    return body


@pytest.mark.parametrize("model", ["claude-sonnet-4-5", "gpt-4o-mini", GEMINI])
def test_long_coding_agent_conversation_streamed(agw, upstream, model):
    body = {**long_conversation(), "model": model}
    assert len(body["tools"]) >= 20 and body["stream"] is True and body["thinking"]["type"] == "enabled"
    script = [("thinking", "Retry the edit."), ("tool", "Edit", {"file_path": "/home/dev/a.py",
                                                                 "old_string": "print('a')", "new_string": "x"})]
    upstream.handler = answer(script)
    client = anthropic.Anthropic(base_url=agw.url, api_key="x", max_retries=0)
    known = {"model", "max_tokens", "messages", "system", "tools", "metadata", "thinking"}
    with client.messages.stream(**{k: v for k, v in body.items() if k in known},
                                extra_body={"context_management": body["context_management"]},
                                extra_headers={"anthropic-beta": "interleaved-thinking-2025-05-14"}) as stream:
        final = stream.get_final_message()
    assert [b.type for b in final.content] == ["thinking", "tool_use"]
    assert final.content[1].input == {"file_path": "/home/dev/a.py", "old_string": "print('a')", "new_string": "x"}
    sent = json.loads(upstream.requests[-1].body)
    if model == "claude-sonnet-4-5":
        assert sent["messages"] == body["messages"] and sent["context_management"] == body["context_management"]
    elif model == GEMINI:
        responses = [p["functionResponse"] for c in sent["contents"] for p in c["parts"] if "functionResponse" in p]
        assert [r["name"] for r in responses] == ["Bash", "Read", "Read", "Edit"]
    else:
        tools = [m for m in sent["messages"] if m["role"] == "tool"]
        assert [m["tool_call_id"] for m in tools] == [
            body["messages"][2]["content"][0]["tool_use_id"], "toolu_r2", "toolu_r3", "toolu_r4"]
        assert tools[-1]["content"] == "Error: File changed on disk"
        assert sent["messages"][-1] == {"role": "user", "content": "try again"}
