"""Upstream behaviours end to end: model discovery, TLS, pool accounting, mock pacing."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path

import pytest
from conftest import basic_config
from gateway import GatewayProcess
from prometheus_client.parser import text_string_to_metric_families
from rawhttp import open_stream, post, request
from upstream_server import Reply, json_reply


def pool_gauge(gw: GatewayProcess, provider: str, state: str) -> float:
    text = request(gw.url, "GET", "/metrics").body.decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "fastgw_pool_connections" and sample.labels == {"provider": provider, "state": state}:
                return sample.value
    return 0.0


def test_model_discovery_adds_upstream_models(upstream_server):
    upstream_server.handler = lambda r: json_reply(
        b'{"object":"list","data":[{"id":"disc-a","object":"model"},{"id":"disc-b","object":"model"}]}'
        if r.target == "/v1/models" else b'{"ok":true}')
    config = basic_config(upstream_server.url).replace("models: [gpt-4o-mini]",
                                                       "models: [gpt-4o-mini]\n    discover_models: true")
    gw = GatewayProcess(config)
    try:
        ids = {m["id"] for m in request(gw.url, "GET", "/v1/models").json()["data"]}
        assert {"disc-a", "disc-b", "local/disc-a", "gpt-4o-mini"} <= ids
        assert post(gw.url, "/v1/chat/completions", {"model": "disc-b"}).status == 200
        assert json.loads(upstream_server.requests[-1].body)["model"] == "disc-b"
        assert any(r.target == "/v1/models" and r.headers["authorization"] == "Bearer sk-test"
                   for r in upstream_server.requests)
    finally:
        gw.stop()


def test_model_discovery_failure_does_not_stop_startup(upstream_server):
    upstream_server.handler = lambda r: Reply(status=500, chunks=[b"boom"], content_length=True)
    config = basic_config(upstream_server.url).replace("models: [gpt-4o-mini]",
                                                       "models: [gpt-4o-mini]\n    discover_models: true")
    gw = GatewayProcess(config)
    try:
        ids = {m["id"] for m in request(gw.url, "GET", "/v1/models").json()["data"]}
        assert "gpt-4o-mini" in ids
        assert "model discovery failed" in gw.logs()
    finally:
        gw.stop()


@pytest.fixture(scope="module")
def tls_upstream(tmp_path_factory):
    """An HTTPS server with a self-signed certificate (not trusted by certifi's bundle)."""
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=127.0.0.1"], check=True, capture_output=True)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    port = sock.getsockname()[1]
    handshakes: list[str] = []
    loop = asyncio.new_event_loop()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handshakes.append("ok")
        writer.close()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(asyncio.start_server(serve, sock=sock, ssl=ctx))
        loop.run_forever()

    threading.Thread(target=run, daemon=True).start()
    yield port, Path(cert)
    loop.call_soon_threadsafe(loop.stop)


def test_tls_failure_is_502(tls_upstream):
    port, _ = tls_upstream
    gw = GatewayProcess(f"""
providers:
  - name: selfsigned
    type: openai
    base_url: https://127.0.0.1:{port}/v1
    api_key: sk-tls
    models: [m]
""")
    try:
        resp = post(gw.url, "/v1/chat/completions", {"model": "m"})
        assert resp.status == 502
        error = resp.error()
        assert error["code"] == "upstream_unreachable"
        assert "TLS" in error["message"] or "certificate" in error["message"]
        assert "sk-tls" not in resp.body.decode()
    finally:
        gw.stop()


def test_client_leaving_returns_pool_counts_to_zero(gateway, upstream):
    upstream.handler = lambda r: Reply(headers=[("content-type", "text/event-stream")],
                                       chunks=[b"data: {}\n\n"], hang=True)
    sock = open_stream(gateway.port, b'{"model":"gpt-4o-mini","stream":true}', b"data: {}")
    time.sleep(1.2)  # metrics snapshots are taken about every second
    assert pool_gauge(gateway, "local", "in_use") == 1
    sock.close()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and pool_gauge(gateway, "local", "in_use") != 0:
        time.sleep(0.2)
    assert pool_gauge(gateway, "local", "in_use") == 0


def test_mock_provider_length_and_pacing():
    gw = GatewayProcess("""
providers:
  - name: slow
    type: mock
    models: [paced]
    mock: {words: 5, ttfb_ms: 150, interval_ms: 60}
""")
    try:
        t0 = time.monotonic()
        resp = post(gw.url, "/v1/chat/completions", {"model": "paced", "stream": True})
        elapsed = time.monotonic() - t0
        events = [e for e in resp.body.split(b"\n\n") if e]
        assert events[-1] == b"data: [DONE]"
        content = "".join(json.loads(e[6:])["choices"][0]["delta"].get("content", "") for e in events[:-1])
        assert len(content.split()) == 5
        # 150 ms to the first event, then 7 more events 60 ms apart.
        assert elapsed >= 0.15 + 6 * 0.06
        assert len(resp.chunks) >= 5  # paced: the events arrived separately
    finally:
        gw.stop()


SSE_EVENTS = [b'data: {"choices":[{"delta":{"content":"w%d"}}]}\n\n' % i for i in range(6)] + [b"data: [DONE]\n\n"]


def test_chunked_framing_variants_reach_the_client_byte_exact(gateway, upstream):
    """Chunk extensions, upper-case sizes, trailers and reads split inside a chunk
    header: the client gets the upstream's SSE bytes, and the connection is reused."""
    wire = b""
    for i, event in enumerate(SSE_EVENTS):
        size = f"{len(event):X}" if i % 2 else f"{len(event):x}"
        wire += size.encode() + (b";ext=1" if i == 2 else b"") + b"\r\n" + event + b"\r\n"
    wire += b"0\r\nx-trailer: 1\r\n\r\n"
    cuts = [1, 5, len(wire) // 3, len(wire) // 3 + 1, len(wire) - 7, len(wire) - 2]
    pieces = [wire[a:b] for a, b in zip([0, *cuts], [*cuts, len(wire)], strict=True)]
    upstream.handler = lambda r: Reply(headers=[("content-type", "text/event-stream")],
                                       raw_body=pieces, interval=0.01)
    body = {"model": "gpt-4o-mini", "stream": True, "stream_options": {"include_usage": True}}
    first = post(gateway.url, "/v1/chat/completions", body)
    accepted = upstream.connections_accepted
    second = post(gateway.url, "/v1/chat/completions", body)
    assert first.status == second.status == 200
    assert first.body == second.body == b"".join(SSE_EVENTS)
    assert upstream.connections_accepted == accepted  # the second request reused the connection


def test_malformed_chunk_mid_stream_ends_with_an_error_event(gateway, upstream):
    wire = [b"%x\r\n" % len(SSE_EVENTS[0]) + SSE_EVENTS[0] + b"\r\n", b"zz\r\nbroken\r\n"]
    upstream.handler = lambda r: Reply(headers=[("content-type", "text/event-stream")], raw_body=wire)
    resp = post(gateway.url, "/v1/chat/completions",
                {"model": "gpt-4o-mini", "stream": True, "stream_options": {"include_usage": True}})
    assert resp.status == 200
    assert resp.body.startswith(SSE_EVENTS[0])
    tail = json.loads(resp.body[len(SSE_EVENTS[0]):].removeprefix(b"data: ").strip())
    assert tail["error"]["type"] == "upstream_error"
    assert "closed the stream unexpectedly" in tail["error"]["message"]
    assert b"[DONE]" not in resp.body
