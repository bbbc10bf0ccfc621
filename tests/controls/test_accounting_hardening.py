"""Accounting that loses nothing: usage on the passthrough route, and streams the client
cancelled billed for what was generated (the provider's usage when it had arrived, else an
estimate, marked ``usage_estimated``), through a real ``fastgw serve``; and the store
migration that adds the column to existing SQLite and PostgreSQL databases."""

from __future__ import annotations

import asyncio
import json
import socket
import sqlite3
import time
from collections.abc import Iterator
from typing import Any

import pytest
from gateway import GatewayProcess
from rawhttp import post, request
from upstream_server import UPSTREAM_JSON, Received, Reply, json_reply, sse_events, sse_reply

from fastgw.controls.store import open_store

MASTER = "sk-master-accounting-0123456789"
ADMIN = {"authorization": f"Bearer {MASTER}"}

RESPONSES_SSE = (
    b'event: response.created\ndata: {"type":"response.created","response":{"id":"r","model":"gpt-4o-mini",'
    b'"usage":null}}\n\n'
    b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta","delta":"hello"}\n\n'
    b'event: response.completed\ndata: {"type":"response.completed","response":{"id":"r","model":"gpt-4o-mini",'
    b'"usage":{"input_tokens":7,"output_tokens":4,"total_tokens":11}}}\n\n'
)
ANTHROPIC_JSON = (b'{"id":"msg_1","type":"message","role":"assistant","model":"claude-haiku-4-5","content":'
                  b'[{"type":"text","text":"hi"}],"stop_reason":"end_turn","usage":{"input_tokens":10,'
                  b'"output_tokens":5,"cache_read_input_tokens":2}}')
ANTHROPIC_SSE = (
    b'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_1","type":"message",'
    b'"role":"assistant","model":"claude-haiku-4-5","content":[],"usage":{"input_tokens":10,"output_tokens":1}}}\n\n'
    b'event: content_block_start\ndata: {"type":"content_block_start","index":0,"content_block":{"type":"text",'
    b'"text":""}}\n\n'
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta",'
    b'"text":"hello"}}\n\n'
    b'event: content_block_stop\ndata: {"type":"content_block_stop","index":0}\n\n'
    b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn"},'
    b'"usage":{"output_tokens":6}}\n\n'
    b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
)


def handler(r: Received) -> Reply:
    body = r.body.replace(b" ", b"")
    if r.target.startswith("/v1/messages"):
        return sse_reply(ANTHROPIC_SSE) if b'"stream":true' in body else json_reply(ANTHROPIC_JSON)
    if r.target.startswith("/v1/responses"):
        return sse_reply(RESPONSES_SSE)
    if b'"stream":true' in body:
        return sse_reply(sse_events(5, usage=b'"include_usage":true' in body))
    return json_reply(UPSTREAM_JSON)


@pytest.fixture(scope="module")
def gw(upstream_server) -> Iterator[GatewayProcess]:
    url = upstream_server.url
    g = GatewayProcess(f"""
providers:
  - name: local
    type: openai
    base_url: {url}/v1
    api_key: sk-acct-openai
    models: [gpt-4o-mini]
  - name: claude
    type: anthropic
    base_url: {url}
    api_key: sk-acct-anthropic
    models: [claude-haiku-4-5]
master_key: {MASTER}
logging: {{flush_interval: 0.05}}
pricing:
  gpt-4o-mini: {{input: 1000, output: 1000}}
  claude-haiku-4-5: {{input: 1000, output: 1000}}
""")
    yield g
    g.stop()


@pytest.fixture
def up(upstream):
    upstream.handler = handler
    return upstream


def entry(gw: GatewayProcess, request_id: str, timeout: float = 5.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        resp = request(gw.url, "GET", f"/admin/logs/{request_id}", headers=ADMIN)
        if resp.status == 200:
            return resp.json()
        assert time.monotonic() < deadline, f"no log entry for {request_id}"
        time.sleep(0.05)


def passthrough(gw: GatewayProcess, path: str, body: dict[str, Any]) -> tuple[str, bytes]:
    resp = post(gw.url, path, body, headers=ADMIN)
    assert resp.status == 200, resp.body
    return resp.headers["x-fastgw-request-id"], resp.body


@pytest.mark.parametrize(("path", "body", "model", "prompt", "completion"), [
    ("/p/local/chat/completions", {"model": "gpt-4o-mini", "messages": []}, "gpt-4o-mini", 3, 2),
    ("/p/local/chat/completions", {"model": "gpt-4o-mini", "messages": [], "stream": True,
                                   "stream_options": {"include_usage": True}}, "gpt-4o-mini", 1, 2),
    ("/p/local/responses", {"model": "gpt-4o-mini", "input": "hi", "stream": True}, "gpt-4o-mini", 7, 4),
    ("/p/claude/v1/messages", {"model": "claude-haiku-4-5", "messages": [], "max_tokens": 5},
     "claude-haiku-4-5", 12, 5),
    ("/p/claude/v1/messages", {"model": "claude-haiku-4-5", "messages": [], "max_tokens": 5, "stream": True},
     "claude-haiku-4-5", 10, 6),
], ids=["chat-json", "chat-sse", "responses-sse", "anthropic-json", "anthropic-sse"])
def test_passthrough_records_the_providers_usage(gw, up, path, body, model, prompt, completion):
    rid, out = passthrough(gw, path, body)
    e = entry(gw, rid)
    assert e["path"] == "passthrough" and e["model"] == model
    assert (e["prompt_tokens"], e["completion_tokens"]) == (prompt, completion), e
    assert e["cost_usd"] == pytest.approx((prompt + completion) * 1000 / 1e6)
    assert e["usage_estimated"] is False
    assert out in (UPSTREAM_JSON, ANTHROPIC_JSON, ANTHROPIC_SSE, RESPONSES_SSE, sse_events(5, usage=True))


def cancel_after(port: int, body: bytes, marker: bytes) -> str:
    """Stream ``body``, leave once ``marker`` arrived; the request id."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(f"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {MASTER}\r\n"
                 f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n".encode() + body)
    seen = b""
    while marker not in seen:
        chunk = sock.recv(65536)
        assert chunk, seen
        seen += chunk
    sock.close()
    head = seen.split(b"\r\n\r\n", 1)[0].decode()
    return next(line.split(":", 1)[1].strip() for line in head.split("\r\n")
                if line.lower().startswith("x-fastgw-request-id"))


def test_cancelled_stream_without_usage_is_billed_by_estimate(gw, up):
    words = [f"word{i:02d} " * 8 for i in range(40)]
    events = [b"data: " + json.dumps({"id": "c", "object": "chat.completion.chunk", "model": "gpt-4o-mini",
                                      "choices": [{"index": 0, "delta": {"content": w}}]}).encode() + b"\n\n"
              for w in words]
    up.handler = lambda r: Reply(headers=[("content-type", "text/event-stream")], chunks=events, interval=0.02,
                                 hang=True)
    body = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x" * 400}],
                       "stream": True}).encode()
    rid = cancel_after(gw.port, body, b"word10")
    e = entry(gw, rid)
    assert e["error_type"] == "client_disconnected" and e["status"] == 200, e
    assert e["usage_estimated"] is True
    # 11+ events of 64 characters were generated before the client left: ~16 tokens each.
    assert 11 * 16 * 0.7 <= e["completion_tokens"] <= 40 * 16 * 1.3, e
    assert e["prompt_tokens"] >= 100 and e["cost_usd"] > 0


def test_cancelled_translated_stream_is_billed_with_the_known_prompt_and_an_estimate(gw, up):
    head = ANTHROPIC_SSE.split(b"event: content_block_delta")[0]
    delta = (b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":'
             b'{"type":"text_delta","text":"' + b"lorem ipsum " * 8 + b'"}}\n\n')
    up.handler = lambda r: Reply(headers=[("content-type", "text/event-stream")], chunks=[head] + [delta] * 40,
                                 interval=0.02, hang=True)
    body = json.dumps({"model": "claude-haiku-4-5", "messages": [{"role": "user", "content": "hi"}],
                       "stream": True}).encode()
    rid = cancel_after(gw.port, body, b"lorem ipsum lorem")
    e = entry(gw, rid)
    assert e["error_type"] == "client_disconnected" and e["usage_estimated"] is True, e
    assert e["prompt_tokens"] == 10  # from message_start, not guessed
    assert e["completion_tokens"] >= 20, e


def test_cancelled_stream_after_the_usage_arrived_is_billed_exactly(gw, up):
    stream = sse_events(3, usage=True).replace(b"data: [DONE]\n\n", b"")
    up.handler = lambda r: Reply(headers=[("content-type", "text/event-stream")], chunks=[stream], hang=True)
    body = json.dumps({"model": "gpt-4o-mini", "messages": [], "stream": True,
                       "stream_options": {"include_usage": True}}).encode()
    rid = cancel_after(gw.port, body, b'"total_tokens":3')
    e = entry(gw, rid)
    assert e["error_type"] == "client_disconnected"
    assert (e["prompt_tokens"], e["completion_tokens"], e["usage_estimated"]) == (1, 2, False), e


OLD_SCHEMA = """CREATE TABLE request_log (id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, day TEXT NOT NULL,
    request_id TEXT NOT NULL, key_id TEXT, key_name TEXT, provider TEXT, model TEXT, path TEXT,
    stream INTEGER NOT NULL DEFAULT 0, status INTEGER NOT NULL, error_type TEXT, ttfb_ms REAL, total_ms REAL,
    prompt_tokens INTEGER, completion_tokens INTEGER, cached_tokens INTEGER, reasoning_tokens INTEGER,
    cost_usd REAL, conversation_id TEXT, request_body TEXT, response_body TEXT)"""
OLD_ROW = "INSERT INTO request_log (ts, day, request_id, status) VALUES (1, '1970-01-01', 'old-1', 200)"


def migrated(url: str) -> list[tuple[Any, ...]]:
    async def main() -> list[tuple[Any, ...]]:
        store = await open_store(url)
        try:
            await store.execute("INSERT INTO request_log (ts, day, request_id, status, usage_estimated) "
                                "VALUES (2, '1970-01-01', 'new-1', 200, 1)")
            return await store.fetchall("SELECT request_id, usage_estimated FROM request_log ORDER BY ts")
        finally:
            await store.close()

    return asyncio.run(main())


def test_store_migration_adds_usage_estimated_to_an_existing_sqlite_database(tmp_path):
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        conn.execute(OLD_SCHEMA)
        conn.execute(OLD_ROW)
    assert migrated(f"sqlite:///{path}") == [("old-1", 0), ("new-1", 1)]
    # Opening again is a no-op.
    assert len(migrated(f"sqlite:///{path}")) == 3


def test_store_migration_adds_usage_estimated_to_an_existing_postgresql_database(pg_dsn):
    import psycopg

    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(OLD_SCHEMA.replace("INTEGER PRIMARY KEY AUTOINCREMENT", "BIGSERIAL PRIMARY KEY")
                     .replace(" REAL", " DOUBLE PRECISION").replace(" INTEGER", " BIGINT"))
        conn.execute(OLD_ROW)
    assert migrated(pg_dsn) == [("old-1", 0), ("new-1", 1)]
    assert len(migrated(pg_dsn)) == 3
