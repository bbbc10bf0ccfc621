"""Client-side timeouts through a real ``fastgw serve``: ``server.body_timeout`` (a request
body that trickles in gets 408) and ``server.send_timeout`` (an answer the client stops
reading is abandoned, its upstream stream closed and its slot freed) -- each shown to
change behaviour against a gateway where the limit is far away."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator

import pytest
from conftest import basic_config
from gateway import GatewayProcess
from rawhttp import post, request
from upstream_server import Reply

MB = 1024 * 1024
EVENT = b"data: " + b"x" * (MB - 8) + b"\n\n"


def gateway(url: str, body_timeout: float, send_timeout: float) -> GatewayProcess:
    return GatewayProcess(basic_config(url, f"server: {{body_timeout: {body_timeout}, send_timeout: {send_timeout}}}\n"
                                            "usage: {inject_stream_usage: false}\n"
                                            "logging: {flush_interval: 0.05}\n"))


@pytest.fixture(scope="module")
def strict(upstream_server) -> Iterator[GatewayProcess]:
    g = gateway(upstream_server.url, 1, 1)
    yield g
    g.stop()


@pytest.fixture(scope="module")
def lenient(upstream_server) -> Iterator[GatewayProcess]:
    g = gateway(upstream_server.url, 30, 30)
    yield g
    g.stop()


def trickle(port: int, path: str, seconds: float) -> tuple[bytes, float]:
    """Announce 100 bytes of body, send one every 0.2 s for ``seconds``; what came back."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(f"POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                 f"content-length: 100\r\n\r\n{{".encode())
    sock.settimeout(0.2)
    t0 = time.monotonic()
    data = b""
    while time.monotonic() - t0 < seconds and not data:
        try:
            sock.sendall(b" ")
            data = sock.recv(65536)
        except TimeoutError:
            continue
        except OSError:
            break
    sock.close()
    return data, time.monotonic() - t0


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/p/local/chat/completions"])
def test_a_trickling_body_gets_408(strict, lenient, upstream, path):
    data, took = trickle(strict.port, path, 5)
    assert data.startswith(b"HTTP/1.1 408"), data[:300]
    error = json.loads(data.partition(b"\r\n\r\n")[2])["error"]
    assert error["code"] == "request_timeout" and error["type"] == "invalid_request_error"
    assert took < 4
    # Where the limit is 30 s, the same trickle is still being read after 2 s.
    data, _ = trickle(lenient.port, path, 2)
    assert data == b""
    # A body that arrives at once is unaffected.
    assert post(strict.url, "/v1/chat/completions", {"model": "gpt-4o-mini"}).status == 200


def stalled_reader(port: int) -> socket.socket:
    body = b'{"model":"gpt-4o-mini","stream":true}'
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32768)
    sock.sendall(f"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: {len(body)}\r\n\r\n".encode()
                 + body)
    return sock


def wait(cond, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def in_use(gw: GatewayProcess) -> float:
    for line in request(gw.url, "GET", "/metrics").body.decode().splitlines():
        if line.startswith('fastgw_pool_connections{provider="local",state="in_use"}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_a_client_that_never_reads_is_abandoned(strict, lenient, upstream):
    upstream.handler = lambda r: Reply(headers=[("content-type", "text/event-stream")], chunks=[EVENT] * 200)
    # Lenient: after 3 s the stalled stream still holds its upstream connection.
    sock = stalled_reader(lenient.port)
    assert wait(lambda: in_use(lenient) == 1, 5)
    time.sleep(3)
    assert in_use(lenient) == 1
    sock.close()
    assert wait(lambda: in_use(lenient) == 0, 5)
    # Strict: abandoned within the 1 s limit plus a sweep; its upstream connection is closed.
    sock = stalled_reader(strict.port)
    assert wait(lambda: in_use(strict) == 1, 5)
    t0 = time.monotonic()
    assert wait(lambda: in_use(strict) == 0, 6), "the stalled answer was not abandoned"
    assert time.monotonic() - t0 < 5
    sock.close()
    assert "the client read nothing for 1s; answer abandoned" in strict.logs()
    # The gateway serves on.
    upstream.handler = lambda r: Reply(chunks=[b'{"ok":true}'], content_length=True)
    assert post(strict.url, "/v1/chat/completions", {"model": "gpt-4o-mini"}).status == 200


def test_request_head_limits(upstream_server, upstream):
    """``server.max_header_bytes`` (431) and ``server.header_timeout`` (a head that trickles
    in is cut off), enforced by granian as configured."""
    g = GatewayProcess(basic_config(upstream_server.url, "server: {max_header_bytes: 16384, header_timeout: 1}\n"))
    try:
        with socket.create_connection(("127.0.0.1", g.port), timeout=10) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\nhost: x\r\nx-big: " + b"h" * 20000 + b"\r\n\r\n")
            data = sock.recv(65536)
        assert data.startswith(b"HTTP/1.1 431"), data[:200]
        with socket.create_connection(("127.0.0.1", g.port), timeout=10) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\nhost: x\r\nx-ok: " + b"h" * 8000 + b"\r\n\r\n")
            assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        with socket.create_connection(("127.0.0.1", g.port), timeout=10) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\nhost: x\r\n")
            t0 = time.monotonic()
            data = sock.recv(65536)  # nothing more is sent: the server gives up on the head
            took = time.monotonic() - t0
        assert took < 5 and not data.startswith(b"HTTP/1.1 200"), (took, data[:200])
    finally:
        g.stop()
