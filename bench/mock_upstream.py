"""Standalone mock LLM upstream: ``python -m bench.mock_upstream --port N [knobs]``.

A raw ``asyncio.Protocol`` on uvloop with minimal HTTP/1.1 keep-alive parsing (Content-Length
or chunked request bodies, pipelining-safe: responses go out in request order). Responses are
pre-encoded once per knob combination and cached, so an unpaced request costs a header scan, a
byte search for ``"stream": true`` and one ``transport.write``. Paced streams are driven by
``loop.call_at`` timers on an absolute schedule (no drift, no per-chunk coroutine).

Knobs (CLI flags set the defaults; ``x-mock-*`` request headers override them per request):
  --ttfb-ms / x-mock-ttfb-ms             delay before the first byte
  --chunks / x-mock-chunks               content chunks per response (stream events)
  --interval-ms / x-mock-interval-ms     gap between content chunks
  --chunk-size / x-mock-chunk-size       characters of content per chunk
  --error-rate / x-mock-error-rate       fraction of requests answered with an error
  --error-status / x-mock-error-status   status code of those errors
  --drop-after / x-mock-drop-after       close the connection after K content chunks (0 = never)
  --embedding-dims / x-mock-embedding-dims
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import re
import signal
import socket
import sys
from collections import deque
from dataclasses import dataclass, replace
from typing import Any

from bench import wire

_STREAM_RE = re.compile(rb'"stream"\s*:\s*true')
_USAGE_RE = re.compile(rb'"include_usage"\s*:\s*true')
_MODEL_RE = re.compile(rb'"model"\s*:\s*"([^"\\]{1,256})"')
_INPUT_LIST_RE = re.compile(rb'"input"\s*:\s*\[')
_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 429: "Too Many Requests",
            431: "Request Header Fields Too Large", 500: "Internal Server Error", 502: "Bad Gateway",
            503: "Service Unavailable", 529: "Overloaded"}
MAX_HEAD = 65536


@dataclass(frozen=True)
class Knobs:
    ttfb_ms: float = 0.0
    chunks: int = 20
    interval_ms: float = 0.0
    chunk_size: int = 8
    error_rate: float = 0.0
    error_status: int = 500
    drop_after: int = 0
    embedding_dims: int = 64


_HEADER_KNOBS = {
    b"x-mock-ttfb-ms": ("ttfb_ms", float),
    b"x-mock-chunks": ("chunks", int),
    b"x-mock-interval-ms": ("interval_ms", float),
    b"x-mock-chunk-size": ("chunk_size", int),
    b"x-mock-error-rate": ("error_rate", float),
    b"x-mock-error-status": ("error_status", int),
    b"x-mock-drop-after": ("drop_after", int),
    b"x-mock-embedding-dims": ("embedding_dims", int),
}


def knobs_from_headers(hl: bytes, base: Knobs) -> Knobs:
    """Apply ``x-mock-*`` overrides found in a lower-cased header block."""
    changes: dict[str, Any] = {}
    for line in hl.split(b"\r\n"):
        if not line.startswith(b"x-mock-"):
            continue
        name, _, value = line.partition(b":")
        spec = _HEADER_KNOBS.get(name.strip())
        if spec is not None:
            with contextlib.suppress(ValueError):
                changes[spec[0]] = spec[1](value.strip().decode())
    k = replace(base, **changes) if changes else base
    if k.chunks < 1 or k.chunk_size < 0:
        k = replace(k, chunks=max(1, k.chunks), chunk_size=max(0, k.chunk_size))
    return k


class Prepared:
    """A pre-encoded HTTP response: the whole thing, or a head plus chunk-framed steps."""

    __slots__ = ("full", "head", "steps")

    def __init__(self, reply: wire.Reply) -> None:
        status = b"HTTP/1.1 %d %s\r\n" % (reply.status, _REASONS.get(reply.status, "Status").encode())
        common = b"content-type: " + reply.content_type + b"\r\nx-request-id: req_mock\r\n"
        if not reply.stream:
            self.head = status + common + b"content-length: %d\r\n\r\n" % len(reply.body)
            self.steps = [reply.body]
            self.full = self.head + reply.body
            return
        self.head = status + common + b"cache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n"
        framed = [_chunk(e) for e in reply.content]
        framed[0] = b"".join(_chunk(e) for e in reply.prefix) + framed[0]
        framed[-1] = framed[-1] + b"".join(_chunk(e) for e in reply.suffix) + b"0\r\n\r\n"
        self.steps = framed
        self.full = self.head + b"".join(framed)


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n" % len(data) + data + b"\r\n"


def _dechunk(buf: bytes, pos: int) -> tuple[bytes, int] | None:
    """Decode a chunked request body starting at ``pos``; None while incomplete."""
    parts = []
    while True:
        e = buf.find(b"\r\n", pos)
        if e < 0:
            return None
        size = int(buf[pos:e].split(b";")[0].strip() or b"0", 16)
        pos = e + 2
        if size == 0:
            t = buf.find(b"\r\n\r\n", pos - 2)
            if t < 0:
                return None
            return b"".join(parts), t + 4
        if len(buf) < pos + size + 2:
            return None
        parts.append(buf[pos : pos + size])
        pos += size + 2


class Mock:
    """Shared state of one mock process: default knobs and the response cache."""

    def __init__(self, knobs: Knobs) -> None:
        self.knobs = knobs
        self.cache: dict[tuple[Any, ...], Prepared] = {}
        self.requests = 0

    def prepared(self, key: tuple[Any, ...], body: bytes) -> Prepared:
        p = self.cache.get(key)
        if p is None:
            if len(self.cache) > 1024:
                self.cache.clear()
            p = self.cache[key] = Prepared(self._build(key, body))
        return p

    @staticmethod
    def _build(key: tuple[Any, ...], body: bytes) -> wire.Reply:
        kind, stream, usage, model, chunks, size, dims = key
        if kind == "chat":
            return wire.openai_chat(model, stream, usage, chunks, size)
        if kind == "responses":
            return wire.openai_responses(model, stream, chunks, size)
        if kind == "anthropic":
            return wire.anthropic_messages(model, stream, chunks, size)
        if kind == "gemini":
            return wire.gemini_generate(model, stream, chunks, size)
        if kind == "embeddings":
            return wire.openai_embeddings(model, usage, dims)
        if kind == "error":
            return wire.error_reply(model, chunks)
        if kind == "health":
            return wire.Reply(body=b'{"status":"ok"}')
        if kind == "models":
            return wire.Reply(body=b'{"object":"list","data":[{"id":"gpt-4o-mini","object":"model","created":1731000000,"owned_by":"mock"}]}')
        return wire.Reply(status=404, body=b'{"error":{"message":"not found","type":"invalid_request_error","param":null,"code":null}}')


def _route(method: bytes, path: bytes, body: bytes) -> tuple[str, bool, bytes]:
    """(kind, stream, model) from the request path and a cheap scan of the body."""
    if path.endswith(b"/chat/completions"):
        kind = "chat"
    elif path.endswith(b"/responses"):
        kind = "responses"
    elif path.endswith(b"/messages"):
        kind = "anthropic"
    elif path.endswith(b"/embeddings"):
        kind = "embeddings"
    elif b":streamGenerateContent" in path or b":generateContent" in path:
        model = path.rsplit(b"/", 1)[-1].split(b":", 1)[0]
        return "gemini", b":streamGenerateContent" in path, model
    elif path.endswith(b"/health") or path == b"/":
        return "health", False, b""
    elif method == b"GET" and path.endswith(b"/models"):
        return "models", False, b""
    else:
        return "notfound", False, b""
    stream = b'"stream"' in body and _STREAM_RE.search(body) is not None
    m = _MODEL_RE.search(body)
    return kind, stream, (m.group(1) if m else b"unknown")


def _embedding_inputs(body: bytes) -> int:
    if _INPUT_LIST_RE.search(body) is None:
        return 1
    try:
        import msgspec

        inp = msgspec.json.decode(body).get("input")
    except Exception:
        return 1
    if isinstance(inp, list) and inp and not isinstance(inp[0], int):
        return len(inp)
    return 1


class MockProtocol(asyncio.Protocol):
    __slots__ = ("buf", "busy", "close_after", "eof", "loop", "mock", "pending", "timer", "transport")

    def __init__(self, mock: Mock, loop: asyncio.AbstractEventLoop) -> None:
        self.mock = mock
        self.loop = loop
        self.buf = b""
        self.busy = False
        self.pending: deque[tuple[bytes, bytes, bytes, bytes]] = deque()
        self.timer: asyncio.TimerHandle | None = None
        self.transport: asyncio.Transport | None = None
        self.close_after = False
        self.eof = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.pending.clear()
        self.transport = None

    def eof_received(self) -> bool | None:
        """Client half-closed: finish what is in flight, then close (True keeps it open)."""
        self.eof = True
        return True if self.busy or self.pending else None

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        while buf:
            he = buf.find(b"\r\n\r\n")
            if he < 0:
                if len(buf) > MAX_HEAD:
                    self._write_close(b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n\r\n")
                    return
                break
            head = buf[:he]
            hl = head.lower()
            start = he + 4
            i = hl.find(b"\r\ncontent-length:")
            if i >= 0:
                j = hl.find(b"\r\n", i + 17)
                end = start + int(hl[i + 17 : j if j >= 0 else len(hl)])
                if len(buf) < end:
                    break
                body = buf[start:end]
            elif b"\r\ntransfer-encoding:" in hl and b"chunked" in hl:
                dec = _dechunk(buf, start)
                if dec is None:
                    break
                body, end = dec
            else:
                body, end = b"", start
            buf = buf[end:]
            sp1 = head.find(b" ")
            sp2 = head.find(b" ", sp1 + 1)
            item = (head[:sp1], head[sp1 + 1 : sp2], hl, body)
            if self.busy:
                self.pending.append(item)
            else:
                self._handle(*item)
        self.buf = buf
        if len(self.pending) > 64 and self.transport is not None:
            self.transport.pause_reading()

    def _write_close(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)
            self.transport.close()

    def _handle(self, method: bytes, target: bytes, hl: bytes, body: bytes) -> None:
        mock = self.mock
        mock.requests += 1
        k = mock.knobs if b"\r\nx-mock-" not in hl else knobs_from_headers(hl, mock.knobs)
        path = target.split(b"?", 1)[0]
        kind, stream, model = _route(method, path, body)
        self.close_after = b"\r\nconnection: close" in hl
        if kind in ("health", "models", "notfound"):
            self._send(mock.prepared((kind, False, False, "", 1, 0, 0), b""), 0.0, 0.0, 0)
            return
        if k.error_rate > 0.0 and random.random() < k.error_rate:
            ekind = kind if kind in ("anthropic", "gemini") else "openai"
            self._send(mock.prepared(("error", False, False, ekind, k.error_status, 0, 0), b""), k.ttfb_ms, 0.0, 0)
            return
        if kind == "embeddings":
            key: tuple[Any, ...] = (kind, False, _embedding_inputs(body), model.decode(), 1, 0, k.embedding_dims)
        else:
            usage = stream and kind == "chat" and b'"include_usage"' in body and _USAGE_RE.search(body) is not None
            key = (kind, stream, usage, model.decode(), k.chunks, k.chunk_size, 0)
        prep = mock.prepared(key, body)
        if stream:
            self._send(prep, k.ttfb_ms, k.interval_ms, k.drop_after)
        else:  # a complete JSON body arrives after the whole generation time
            self._send(prep, k.ttfb_ms + max(0, k.chunks - 1) * k.interval_ms, 0.0, 0)

    def _send(self, prep: Prepared, ttfb_ms: float, interval_ms: float, drop_after: int) -> None:
        t = self.transport
        if t is None:
            return
        steps = prep.steps
        drop = 0 < drop_after < len(steps)
        if ttfb_ms <= 0.0 and (interval_ms <= 0.0 or len(steps) == 1) and not drop:
            t.write(prep.full)
            if self.close_after:
                t.close()
            return
        if ttfb_ms <= 0.0 and interval_ms <= 0.0:  # unpaced drop
            t.write(prep.head + b"".join(steps[:drop_after]))
            t.close()
            return
        self.busy = True
        t0 = self.loop.time() + ttfb_ms / 1000.0
        last = drop_after if drop else len(steps)
        if interval_ms <= 0.0 and not drop:
            self.timer = self.loop.call_at(t0, self._step, prep, [prep.full], 0, t0, 0.0, 1, False)
        else:
            seq = [prep.head + steps[0], *steps[1:last]]
            self.timer = self.loop.call_at(t0, self._step, prep, seq, 0, t0, interval_ms / 1000.0, last, drop)

    def _step(self, prep: Prepared, seq: list[bytes], i: int, t0: float, iv: float, last: int, drop: bool) -> None:
        self.timer = None
        t = self.transport
        if t is None:
            return
        t.write(seq[i])
        i += 1
        if i < last:
            self.timer = self.loop.call_at(t0 + i * iv, self._step, prep, seq, i, t0, iv, last, drop)
            return
        self.busy = False
        if drop or self.close_after:
            t.close()
            return
        while self.pending and not self.busy and self.transport is not None:
            self._handle(*self.pending.popleft())
        if self.transport is not None and not self.pending and not self.busy:
            if self.eof:
                self.transport.close()
            else:
                self.transport.resume_reading()


def _set_pdeathsig() -> None:
    """Die with the parent (Linux prctl), so no mock process outlives its launcher."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def serve(host: str, port: int, knobs: Knobs, reuse_port: bool) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover
        pass
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    mock = Mock(knobs)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(4096)
    server = loop.run_until_complete(loop.create_server(lambda: MockProtocol(mock, loop), sock=sock))
    stop = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
    try:
        loop.run_until_complete(stop)
    finally:
        server.close()
        loop.close()


def _child(host: str, port: int, knobs: Knobs) -> None:
    _set_pdeathsig()
    serve(host, port, knobs, True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.mock_upstream", description=__doc__.split("\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=9000)
    p.add_argument("--procs", type=int, default=1, help="processes sharing the port via SO_REUSEPORT")
    p.add_argument("--ttfb-ms", type=float, default=0.0)
    p.add_argument("--chunks", type=int, default=20)
    p.add_argument("--interval-ms", type=float, default=0.0)
    p.add_argument("--chunk-size", type=int, default=8)
    p.add_argument("--error-rate", type=float, default=0.0)
    p.add_argument("--error-status", type=int, default=500)
    p.add_argument("--drop-after", type=int, default=0)
    p.add_argument("--embedding-dims", type=int, default=64)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    knobs = Knobs(a.ttfb_ms, max(1, a.chunks), a.interval_ms, a.chunk_size, a.error_rate, a.error_status,
                  a.drop_after, a.embedding_dims)
    import multiprocessing as mp

    children = []
    for _ in range(max(0, a.procs - 1)):
        pr = mp.get_context("fork").Process(target=_child, args=(a.host, a.port, knobs), daemon=True)
        pr.start()
        children.append(pr)
    print(f"mock_upstream listening on {a.host}:{a.port} procs={a.procs} pid={os.getpid()} {knobs}",
          file=sys.stderr, flush=True)
    try:
        serve(a.host, a.port, knobs, a.procs > 1)
    finally:
        for pr in children:
            if pr.pid is not None and pr.is_alive():
                os.kill(pr.pid, signal.SIGTERM)
        for pr in children:
            pr.join(2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
