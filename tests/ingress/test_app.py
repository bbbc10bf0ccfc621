"""Routes, validation, auth, failures and lifecycle, through real HTTP."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time

import pytest
from conftest import basic_config
from gateway import GatewayProcess, free_port
from rawhttp import open_stream, post, request
from upstream_server import Reply, json_reply, sse_events, sse_reply


@pytest.mark.parametrize(
    ("body", "param", "fragment"),
    [
        (b"{not json", None, "not valid JSON"),
        (b"[1,2]", None, "must be a JSON object"),
        (b'"model"', None, "must be a JSON object"),
        (b'{"messages":[]}', "model", "provide a model"),
        (b'{"model":42}', "model", "must be a string"),
        (b'{"model":"gpt-4o-mini","stream":"yes"}', "stream", "must be a boolean"),
        (b'{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":1}}',
         "stream_options.include_usage", "boolean"),
    ],
)
def test_bad_requests_get_400_naming_the_param(gateway, body, param, fragment):
    resp = post(gateway.url, "/v1/chat/completions", body)
    assert resp.status == 400
    error = resp.error()
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert fragment in error["message"]


def test_unknown_and_ambiguous_models_are_404(gateway):
    resp = post(gateway.url, "/v1/chat/completions", {"model": "gpt-9", "messages": []})
    assert resp.status == 404
    assert resp.error()["code"] == "model_not_found"
    assert "provider/model" in resp.error()["message"]
    resp = post(gateway.url, "/v1/chat/completions", {"model": "gpt-4o-mini-dup", "messages": []})
    assert resp.status == 404
    message = resp.error()["message"]
    assert "'reasoning/gpt-4o-mini-dup'" in message and "'dup/gpt-4o-mini-dup'" in message


def test_unknown_route_and_wrong_method(gateway):
    resp = request(gateway.url, "GET", "/v2/nothing")
    assert resp.status == 404 and resp.error()["code"] == "unknown_route"
    resp = request(gateway.url, "GET", "/v1/chat/completions")
    assert resp.status == 405 and resp.headers["allow"] == "POST"
    resp = request(gateway.url, "POST", "/v1/models", b"{}")
    assert resp.status == 405


def test_body_over_the_limit_is_413_without_reading_it(gateway):
    sock = socket.create_connection(("127.0.0.1", gateway.port), timeout=5)
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                 b"content-length: 40000000\r\n\r\n" + b"{" + b" " * 1000)
    data = sock.recv(65536)
    sock.close()
    assert data.startswith(b"HTTP/1.1 413")
    assert b"request_too_large" in data


def test_models_list_and_detail(gateway):
    resp = request(gateway.url, "GET", "/v1/models")
    assert resp.status == 200
    ids = {m["id"]: m["owned_by"] for m in resp.json()["data"]}
    assert ids["gpt-4o-mini"] == "local"
    assert ids["local/gpt-4o-mini"] == "local"
    assert ids["fast"] == "local"
    assert ids["o4-mini"] == "reasoning"
    assert "gpt-4o-mini-dup" not in ids  # ambiguous: only the qualified names are offered
    assert ids["dup/gpt-4o-mini-dup"] == "dup"
    assert ids["mock-gpt"] == "mock"
    resp = request(gateway.url, "GET", "/v1/models/local/gpt-4o-mini")
    assert resp.status == 200 and resp.json()["id"] == "local/gpt-4o-mini"
    resp = request(gateway.url, "GET", "/v1/models/nope")
    assert resp.status == 404 and resp.error()["code"] == "model_not_found"


def test_health_and_ready(gateway):
    assert request(gateway.url, "GET", "/health").json() == {"status": "ok"}
    assert request(gateway.url, "GET", "/ready").status == 200


def test_passthrough_uses_provider_credentials(gateway, upstream):
    upstream.handler = lambda r: json_reply(b'{"data":[]}', headers=[("x-custom", "1")])
    resp = request(gateway.url, "GET", "/p/local/models?limit=2", headers={"authorization": "Bearer client"})
    assert resp.status == 200 and resp.body == b'{"data":[]}'
    assert resp.headers["x-custom"] == "1"
    got = upstream.requests[-1]
    assert got.target == "/v1/models?limit=2"
    assert got.headers["authorization"] == "Bearer sk-test"


def test_passthrough_streams_request_and_response(gateway, upstream):
    body = sse_events(5)
    upstream.handler = lambda r: sse_reply(body)
    payload = b'{"model":"gpt-4o-mini","stream":true,"x":"' + b"a" * 200_000 + b'"}'
    resp = post(gateway.url, "/p/local/chat/completions", payload)
    assert resp.status == 200 and resp.body == body
    assert upstream.requests[-1].body == payload


@pytest.mark.parametrize("path", ["/p/local/../secrets", "/p/local/%2e%2e/x", "/p/local/a/%2F/b", "/p/local/./x"])
def test_passthrough_cannot_leave_the_base_url(gateway, upstream, path):
    sock = socket.create_connection(("127.0.0.1", gateway.port), timeout=5)
    sock.sendall(f"GET {path} HTTP/1.1\r\nhost: x\r\n\r\n".encode())
    data = sock.recv(65536)
    sock.close()
    assert data.startswith(b"HTTP/1.1 400") or data.startswith(b"HTTP/1.1 404"), data[:100]
    assert not any(".." in r.target or "secrets" in r.target for r in upstream.requests)


def test_passthrough_unknown_provider(gateway):
    resp = request(gateway.url, "GET", "/p/nobody/models")
    assert resp.status == 404 and resp.error()["code"] == "unknown_provider"


def test_client_leaving_mid_stream_closes_upstream(gateway, upstream):
    upstream.handler = lambda r: Reply(headers=[("content-type", "text/event-stream")],
                                       chunks=[b"data: {}\n\n"] * 3, hang=True)
    before = upstream.closed_midstream
    open_stream(gateway.port, b'{"model":"gpt-4o-mini","stream":true}', b"data: {}").close()
    deadline = time.monotonic() + 1.5
    while upstream.closed_midstream == before and time.monotonic() < deadline:
        time.sleep(0.02)
    assert upstream.closed_midstream == before + 1, "the upstream stream was not closed within a second"
    # The gateway still works, and the dead connection was not reused.
    upstream.handler = lambda r: json_reply(b'{"ok":1}')
    assert post(gateway.url, "/v1/chat/completions", {"model": "gpt-4o-mini"}).body == b'{"ok":1}'


def test_upstream_refused_is_502():
    port = free_port()  # nothing listens there
    gw = GatewayProcess(f"""
providers:
  - name: down
    type: openai
    base_url: http://127.0.0.1:{port}/v1
    models: [m]
""")
    try:
        resp = post(gw.url, "/v1/chat/completions", {"model": "m"})
        assert resp.status == 502
        assert resp.error()["code"] == "upstream_unreachable"
    finally:
        gw.stop()


def test_timeouts_are_504(upstream_server):
    gw = GatewayProcess(basic_config(upstream_server.url).replace(
        "models: [gpt-4o-mini]", "models: [gpt-4o-mini]\n    timeouts: {first_byte: 0.3, idle: 0.3}"))
    try:
        upstream_server.handler = lambda r: Reply(delay_before_headers=1.0, chunks=[b"{}"], content_length=True)
        resp = post(gw.url, "/v1/chat/completions", {"model": "gpt-4o-mini"})
        assert resp.status == 504
        assert resp.error()["type"] == "timeout"
        # Idle between stream chunks: an error event ends the stream.
        upstream_server.handler = lambda r: Reply(headers=[("content-type", "text/event-stream")],
                                                  chunks=[b"data: {}\n\n", b"data: {}\n\n"], interval=1.0)
        resp = post(gw.url, "/v1/chat/completions", {"model": "gpt-4o-mini", "stream": True})
        assert resp.status == 200
        last = json.loads(resp.body.split(b"\n\n")[-2].removeprefix(b"data: "))
        assert last["error"]["type"] == "timeout"
    finally:
        gw.stop()


def test_master_key_auth_and_key_forwarding(upstream_server):
    config = basic_config(upstream_server.url) + f"""
  - name: byok
    type: openai
    base_url: {upstream_server.url}/v1
    forward_client_key: true
    models: [byok-model]
"""
    gw = GatewayProcess(config, env={"FASTGW_MASTER_KEY": "master-secret-123"})
    try:
        upstream_server.handler = lambda r: json_reply(b"{}")
        body = {"model": "gpt-4o-mini"}
        for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": "master-secret-123"}):
            resp = post(gw.url, "/v1/chat/completions", body, headers)
            assert resp.status == 401
            assert resp.error()["type"] == "authentication_error"
            assert "master-secret" not in resp.body.decode()
        assert request(gw.url, "GET", "/v1/models").status == 401
        assert request(gw.url, "GET", "/health").status == 200
        good = {"authorization": "Bearer master-secret-123"}
        assert post(gw.url, "/v1/chat/completions", body, good).status == 200
        assert upstream_server.requests[-1].headers["authorization"] == "Bearer sk-test"
        assert post(gw.url, "/v1/chat/completions", {"model": "byok-model"}, good).status == 200
        assert upstream_server.requests[-1].headers["authorization"] == "Bearer master-secret-123"
        assert "master-secret-123" not in gw.logs()
    finally:
        gw.stop()


def test_sigterm_lets_streams_finish(upstream_server):
    gw = GatewayProcess(basic_config(upstream_server.url))
    body = sse_events(10)
    upstream_server.handler = lambda r: sse_reply(body, interval=0.1)
    result: dict[str, object] = {}

    def client() -> None:
        result["resp"] = post(gw.url, "/v1/chat/completions", {"model": "gpt-4o-mini", "stream": True})

    thread = threading.Thread(target=client)
    thread.start()
    time.sleep(0.35)
    code = gw.stop()
    thread.join(10)
    resp = result["resp"]
    assert resp.status == 200  # type: ignore[attr-defined]
    assert resp.body == body  # type: ignore[attr-defined]
    assert code == 0
    with pytest.raises(OSError):
        request(gw.url, "GET", "/health", timeout=1)


def test_embedded_default_answers_without_config():
    gw = GatewayProcess(None)
    try:
        resp = post(gw.url, "/v1/chat/completions", {"model": "mock-gpt", "messages": []})
        assert resp.status == 200
        assert resp.json()["object"] == "chat.completion"
        assert resp.headers["x-fastgw-path"] == "mock"
        resp = post(gw.url, "/v1/chat/completions", {"model": "mock-gpt", "stream": True, "max_tokens": 3,
                                                     "stream_options": {"include_usage": True}})
        events = [e.removeprefix(b"data: ") for e in resp.body.split(b"\n\n") if e]
        assert events[-1] == b"[DONE]"
        assert json.loads(events[-2])["usage"]["completion_tokens"] == 3
    finally:
        gw.stop()


def test_env_providers_are_registered_and_masked():
    env = {"OPENAI_API_KEY": "sk-proj-abcdefghijklmnop", "GROQ_API_KEY": "gsk_0123456789abcdef",
           "OLLAMA_BASE_URL": "http://127.0.0.1:11434"}
    import os
    import tempfile

    path = tempfile.mktemp(suffix=".yaml")
    with open(path, "w") as f:
        f.write("aliases:\n  fast: groq/llama-3.1-8b-instant\n")
    out = subprocess.run([sys.executable, "-m", "fastgw", "check-config", path], capture_output=True, text=True,
                         env={**os.environ, **env})
    assert out.returncode == 0, out.stderr
    assert "openai: type=openai" in out.stdout and "groq: type=groq" in out.stdout
    assert "ollama: type=ollama base_url=http://127.0.0.1:11434/v1" in out.stdout
    assert "fast -> groq/llama-3.1-8b-instant" in out.stdout
    assert "abcdefghijklmnop" not in out.stdout and "0123456789abcdef" not in out.stdout


def test_overload_answers_503_at_once(upstream_server):
    config = basic_config(upstream_server.url) + "server:\n  max_concurrent_requests: 2\n"
    gw = GatewayProcess(config)
    upstream_server.handler = lambda r: Reply(headers=[("content-type", "text/event-stream")],
                                              chunks=[b"data: {}\n\n"], hang=True)
    socks = []
    try:
        for _ in range(2):
            socks.append(open_stream(gw.port, b'{"model":"gpt-4o-mini","stream":true}', b"data: {}"))
        t0 = time.monotonic()
        resp = post(gw.url, "/v1/chat/completions", {"model": "gpt-4o-mini"})
        assert resp.status == 503 and time.monotonic() - t0 < 1
        assert resp.error()["code"] == "gateway_overloaded"
        assert resp.headers["retry-after"] == "1"
        assert request(gw.url, "GET", "/health").status == 200  # probes are not counted
        for sock in socks:
            sock.close()
        upstream_server.handler = lambda r: json_reply(b'{"ok":1}')
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            resp = post(gw.url, "/v1/chat/completions", {"model": "gpt-4o-mini"})
            if resp.status == 200:
                break
            time.sleep(0.1)
        assert resp.status == 200
    finally:
        for sock in socks:
            sock.close()
        gw.stop()


def test_sigterm_closes_streams_still_open_after_the_grace_period(upstream_server):
    gw = GatewayProcess(basic_config(upstream_server.url) + "server:\n  grace_period: 1\n")
    upstream_server.handler = lambda r: sse_reply(sse_events(40), interval=0.2)  # ~8 s of stream
    result: dict[str, object] = {}

    def client() -> None:
        try:
            result["resp"] = post(gw.url, "/v1/chat/completions", {"model": "gpt-4o-mini", "stream": True},
                                  timeout=20)
        except Exception as exc:  # the connection is cut: that is the point
            result["error"] = exc

    thread = threading.Thread(target=client)
    thread.start()
    time.sleep(0.5)
    t0 = time.monotonic()
    gw.stop(timeout=15)
    stopped_in = time.monotonic() - t0
    thread.join(10)
    assert stopped_in < 6, f"the gateway took {stopped_in:.1f} s to stop with a 1 s grace period"
    resp = result.get("resp")
    assert "error" in result or (resp is not None and b"[DONE]" not in resp.body)  # type: ignore[attr-defined]
