"""No secret is ever written: a full run (good requests, errors, bad keys, an upstream that
echoes the key back, passthrough, admin, audit log on) through a real ``fastgw serve``,
then everything it wrote is searched for every key used -- the gateway's log file,
``/metrics``, every column of every request-log row in the SQLite store, and every
response body and header the clients received."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator

import pytest
from gateway import GatewayProcess
from rawhttp import RawResponse, request
from upstream_server import UPSTREAM_JSON, Received, Reply, json_reply, sse_events, sse_reply

MASTER = "sk-master-SECRET-m4st3r-0123456789"
OPENAI_KEY = "sk-proj-SECRET-openai-abcdef0123456789"
ANTHROPIC_KEY = "sk-ant-api03-SECRET-anthropic-abcdef012345"
GEMINI_KEY = "AIzaSySECRETgeminiABCDEF0123456789xyz"
CLIENT_BYOK = "sk-byok-SECRET-client-0123456789abcdef"
WRONG_MASTER = "sk-master-SECRET-wrong-0123456789"
FAKE_VIRTUAL = "sk-fgw-SECRETfakevirtualkey0123456789"


def echoing(r: Received) -> Reply:
    """An upstream that puts whatever credential it received into its answers."""
    cred = r.headers.get("authorization") or r.headers.get("x-api-key") or r.headers.get("x-goog-api-key") or ""
    if b"err-model" in r.body or r.target.endswith("/fail"):
        body = json.dumps({"error": {"message": f"invalid key {cred}; you sent {cred.split()[-1] if cred else ''}",
                                     "type": "invalid_request_error", "param": None, "code": None}}).encode()
        return json_reply(body, status=401, headers=[("x-request-id", "req-1"), ("x-echo", cred)])
    if b"text-error" in r.body:
        return Reply(status=500, headers=[("content-type", "text/plain")], chunks=[f"boom {cred}".encode()],
                     content_length=True)
    if b'"stream":true' in r.body.replace(b" ", b""):
        return sse_reply(sse_events(3, usage=True))
    return json_reply(UPSTREAM_JSON, headers=[("x-echo", cred)])


@pytest.fixture(scope="module")
def gw(upstream_server) -> Iterator[GatewayProcess]:
    url = upstream_server.url
    g = GatewayProcess(f"""
providers:
  - name: local
    type: openai
    base_url: {url}/v1
    api_key: {OPENAI_KEY}
    models: [gpt-4o-mini, err-model, text-error]
  - name: claude
    type: anthropic
    base_url: {url}
    api_key: {ANTHROPIC_KEY}
    models: [claude-haiku-4-5]
  - name: gem
    type: gemini
    base_url: {url}
    api_key: {GEMINI_KEY}
    models: [gemini-2.5-flash]
  - name: byok
    type: openai
    base_url: {url}/v1
    forward_client_key: true
    models: [byok-model]
master_key: {MASTER}
logging: {{audit: true, flush_interval: 0.05}}
server: {{log_level: debug}}
""")
    yield g
    g.stop()


def test_no_key_is_written_anywhere(gw, upstream):
    upstream.handler = echoing
    seen: list[RawResponse] = []

    def call(method: str, path: str, body: dict | None = None, key: str | None = MASTER,
             header: str = "authorization") -> RawResponse:
        headers = {}
        if key is not None:
            headers[header] = f"Bearer {key}" if header == "authorization" else key
        resp = request(gw.url, method, path, body, headers=headers)
        seen.append(resp)
        return resp

    created = call("POST", "/admin/keys", {"name": "team"})
    assert created.status == 201
    virtual = created.json()["key"]
    seen.pop()  # the one answer that must show the new key (once)
    chat = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"my key is {OPENAI_KEY}"}]}
    for key in (MASTER, virtual):
        assert call("POST", "/v1/chat/completions", chat, key).status == 200
        assert call("POST", "/v1/chat/completions", {**chat, "stream": True}, key).status == 200
        assert call("POST", "/v1/chat/completions", {**chat, "model": "claude-haiku-4-5"}, key).status in (200, 502)
        assert call("POST", "/v1/chat/completions", {**chat, "model": "gemini-2.5-flash"}, key).status in (200, 502)
        assert call("POST", "/v1/chat/completions", {**chat, "model": "err-model"}, key).status == 401
        assert call("POST", "/v1/chat/completions", {**chat, "model": "text-error"}, key).status == 500
        assert call("GET", "/p/local/fail", None, key).status == 401
        assert call("GET", "/p/local/models", None, key).status == 200
        assert call("GET", "/p/claude/v1/fail", None, key).status == 401
        assert call("GET", "/v1/models", None, key).status == 200
    assert call("POST", "/v1/chat/completions", {**chat, "model": "byok-model"}, CLIENT_BYOK).status == 401
    for bad in (WRONG_MASTER, FAKE_VIRTUAL, f"{MASTER}x", MASTER[:-1]):
        assert call("POST", "/v1/chat/completions", chat, bad).status == 401
        assert call("POST", "/v1/chat/completions", chat, bad, header="x-api-key").status == 401
        assert call("GET", "/admin/keys", None, bad).status == 401
        assert call("GET", "/p/local/models", None, bad).status == 401
    assert call("GET", "/admin/keys").status == 200
    assert call("GET", "/admin/logs?limit=200").status == 200
    time.sleep(0.5)  # let the request log flush
    metrics = request(gw.url, "GET", "/metrics").body.decode()
    gw.stop()

    db = sqlite3.connect(gw.dir / "fastgw.db")
    rows = db.execute("SELECT * FROM request_log").fetchall()
    keys_rows = db.execute("SELECT * FROM keys").fetchall()
    db.close()
    assert len(rows) >= 25
    written = {
        "gateway log": gw.logs(),
        "/metrics": metrics,
        "request log rows": "\n".join(repr(r) for r in rows),
        "keys table": "\n".join(repr(r) for r in keys_rows),
        "responses": "\n".join(r.body.decode("utf-8", "replace") + repr(r.headers) for r in seen),
    }
    secrets = [MASTER, OPENAI_KEY, ANTHROPIC_KEY, GEMINI_KEY, CLIENT_BYOK, WRONG_MASTER, FAKE_VIRTUAL, virtual]
    leaks = [(where, secret) for where, text in written.items() for secret in secrets
             for fragment in (secret, secret[6:-4]) if fragment in text]
    assert not leaks, leaks
    # The upstream really did echo the keys (the test would prove nothing otherwise).
    assert any(OPENAI_KEY in r.headers.get("authorization", "") for r in upstream.requests)
