"""Backpressure: a client reading a fast 100 MB stream slowly, or not at all, never makes the
gateway buffer the upstream -- the worker's RSS stays flat (VmRSS from /proc, a generous
bound) while the upstream is held back, and the whole stream still arrives intact."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest
from conftest import basic_config
from gateway import GatewayProcess
from upstream_server import Reply

MB = 1024 * 1024
EVENT = b"data: " + b"x" * (MB - 8) + b"\n\n"
EVENTS = 100
# Far below the 100 MB that buffering the stream would take, far above noise.
RSS_BOUND_MB = 48


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.fixture(scope="module")
def gw(upstream_server) -> Iterator[GatewayProcess]:
    g = GatewayProcess(basic_config(upstream_server.url, "usage: {inject_stream_usage: false}\n"))
    yield g
    g.stop()


def start_stream(port: int) -> socket.socket:
    body = b'{"model":"gpt-4o-mini","stream":true}'
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    sock.sendall(f"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: {len(body)}\r\n\r\n".encode()
                 + body)
    return sock


def test_stalled_then_slow_reader_of_100_mb_keeps_rss_flat(gw, upstream):
    upstream.handler = lambda r: Reply(headers=[("content-type", "text/event-stream")], chunks=[EVENT] * EVENTS)
    worker = gw.worker_pids()[0]
    base = rss_mb(worker)
    sock = start_stream(gw.port)
    got = 0
    while got < 2 * MB:
        got += len(sock.recv(65536))
    peak = 0.0
    for _ in range(8):  # stalled for 2 s: a buffering gateway would take the whole 100 MB now
        time.sleep(0.25)
        peak = max(peak, rss_mb(worker))
    tail = b""
    reads = 0
    while True:
        chunk = sock.recv(256 * 1024)
        if not chunk:
            break
        got += len(chunk)
        tail = (tail + chunk)[-16:]
        reads += 1
        if reads % 40 == 0:
            peak = max(peak, rss_mb(worker))
            time.sleep(0.01)  # a slow reader, in bursts
        if tail.endswith(b"0\r\n\r\n"):
            break
    sock.close()
    assert got > EVENTS * MB, got
    assert peak - base < RSS_BOUND_MB, f"RSS grew from {base:.0f} MB to {peak:.0f} MB"
    print(f"RSS base {base:.1f} MB, peak {peak:.1f} MB over a {EVENTS} MB stream")


def test_a_reader_that_stops_for_good_holds_the_upstream_back_and_leaves_cleanly(gw, upstream):
    upstream.handler = lambda r: Reply(headers=[("content-type", "text/event-stream")], chunks=[EVENT] * EVENTS)
    worker = gw.worker_pids()[0]
    base = rss_mb(worker)
    sock = start_stream(gw.port)
    sock.recv(65536)
    time.sleep(1.5)
    assert rss_mb(worker) - base < RSS_BOUND_MB
    sock.close()
    deadline = time.monotonic() + 5
    while upstream.open_connections and time.monotonic() < deadline:
        time.sleep(0.05)
    assert upstream.open_connections == 0, "the upstream stream was not closed after the client left"
