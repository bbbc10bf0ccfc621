"""A real :class:`fastgw.app.Gateway` driven in-process with hand-made ASGI scope, receive
and send: its own SQLite store, the built-in mock provider, and OpenAI, Anthropic and Gemini
providers on a loopback test upstream (:func:`provider_like` answers for all three)."""

from __future__ import annotations

import asyncio
from typing import Any

from upstream_server import Received, Reply, json_reply, sse_events, sse_reply

from bench.wire import anthropic_json, anthropic_sse, gemini_json, gemini_sse
from fastgw.app import Gateway
from fastgw.config import parse_config

MASTER = "sk-fuzz-master-0123456789"
TIMEOUT = 10.0


def provider_like(r: Received) -> Reply:
    """A test upstream handler answering like each provider (JSON or SSE, as asked)."""
    script = [("text", "hi there")]
    if r.target.startswith("/v1/messages"):
        if b'"stream":true' in r.body.replace(b" ", b""):
            return sse_reply(anthropic_sse(script))
        return json_reply(anthropic_json(script))
    if r.target.startswith("/v1beta/"):
        if "stream" in r.target:
            return sse_reply(gemini_sse(script))
        return json_reply(gemini_json(script))
    if b'"stream":true' in r.body.replace(b" ", b""):
        return sse_reply(sse_events(3))
    return json_reply(b'{"id":"x","object":"chat.completion","choices":[],"usage":{"prompt_tokens":1,'
                      b'"completion_tokens":1,"total_tokens":2}}')


class Harness:
    def __init__(self, upstream_url: str, db: str) -> None:
        config = parse_config(f"""
providers:
  - name: local
    type: openai
    base_url: {upstream_url}/v1
    api_key: sk-fuzz-provider
    models: [gpt-4o-mini, "gpt-*"]
    timeouts: {{first_byte: 5, idle: 5, total: 8}}
  - name: claude
    type: anthropic
    base_url: {upstream_url}
    api_key: sk-fuzz-claude
    models: ["claude-*"]
  - name: gem
    type: gemini
    base_url: {upstream_url}
    api_key: sk-fuzz-gemini
    models: ["gemini-*"]
aliases:
  fast: local/gpt-4o-mini
master_key: {MASTER}
store_url: sqlite:///{db}
server: {{max_body_bytes: 262144}}
""", env={})
        self.loop = asyncio.new_event_loop()
        self.gw = Gateway(config, env={})
        self.loop.run_until_complete(self.gw.startup())

    def close(self) -> None:
        self.loop.run_until_complete(self.gw.shutdown())
        self.loop.close()

    def call(self, method: str, path: bytes, headers: list[tuple[bytes, bytes]], pieces: list[bytes]
             ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        return self.loop.run_until_complete(asyncio.wait_for(self._call(method, path, headers, pieces), TIMEOUT))

    async def _call(self, method: str, raw_path: bytes, headers: list[tuple[bytes, bytes]], pieces: list[bytes]
                    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        path, _, query = raw_path.partition(b"?")
        scope: dict[str, Any] = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
            "scheme": "http", "path": path.decode("latin-1"), "raw_path": raw_path, "query_string": query,
            "root_path": "", "headers": headers, "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 4000),
        }
        queue = list(pieces) or [b""]
        done = asyncio.Event()
        out: dict[str, Any] = {"status": None, "headers": [], "body": b""}

        async def receive() -> dict[str, Any]:
            if queue:
                body = queue.pop(0)
                return {"type": "http.request", "body": body, "more_body": bool(queue)}
            await done.wait()  # like a server: the client is still there until the answer ended
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                assert out["status"] is None, "two response starts"
                out["status"] = message["status"]
                out["headers"] = message.get("headers", [])
            elif message["type"] == "http.response.body":
                assert out["status"] is not None, "body before start"
                out["body"] += message.get("body", b"")
                if not message.get("more_body", False):
                    done.set()

        await self.gw(scope, receive, send)
        done.set()
        assert out["status"] is not None, "the app returned without answering"
        return out["status"], out["headers"], out["body"]
