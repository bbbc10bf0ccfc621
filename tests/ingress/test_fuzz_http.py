"""Fuzzing and request smuggling through real HTTP: raw sockets to a real ``fastgw serve``.

Fuzz: arbitrary request lines, methods, header names and values (CR/LF, control bytes,
long and repeated), bodies and framings, sent byte for byte. granian (hyper) refuses what
HTTP/1.1 does not allow with its own empty 400 or by closing the connection; whatever
reaches fastgw gets a 2xx or a 4xx in the envelope. Never a 5xx, never a hang, the
worker never dies (checked after every example).

Smuggling: what granian does with conflicting ``Content-Length`` / ``Transfer-Encoding``,
bad chunk sizes and pipelined requests is recorded below, and the passthrough (the only
route that streams a client's body upstream) is shown never to forward an ambiguous
request: the upstream only ever sees requests framed by fastgw itself, and no smuggled
second request.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import pytest
from conftest import basic_config
from gateway import GatewayProcess
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from upstream_server import json_reply

TRIED = {"http": 0}


@pytest.fixture(scope="module")
def gw(upstream_server) -> Iterator[GatewayProcess]:
    g = GatewayProcess(basic_config(upstream_server.url, "server: {max_body_bytes: 65536}\n"))
    yield g
    g.stop()
    print(f"\nfuzz (real HTTP): {TRIED['http']} raw requests tried")


def exchange(port: int, raw: bytes, timeout: float = 5.0, may_wait: bool = False) -> bytes:
    """Send ``raw`` (with ``connection: close``), read until the gateway closes (bounded).

    A half-close would not do: granian treats it as the client leaving. ``may_wait``: the
    request is incomplete (a body shorter than its length), so the server rightly waits for
    the rest; the client then gives up after ``timeout``.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(raw)
        data = b""
        try:
            while chunk := sock.recv(65536):
                data += chunk
        except TimeoutError:
            if not may_wait:
                pytest.fail(f"the gateway hung on {raw[:200]!r}")
        except ConnectionResetError:
            pass
    return data


def responses(data: bytes) -> list[tuple[int, bytes, bytes]]:
    """(status, head, body) of each response in ``data`` (Content-Length or chunked framing)."""
    out = []
    while data.startswith(b"HTTP/1.1 "):
        head, _, rest = data.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        lower = head.lower()
        if b"transfer-encoding: chunked" in lower:
            body = b""
            while True:
                size_line, _, rest = rest.partition(b"\r\n")
                size = int(size_line.split(b";")[0] or b"0", 16)
                if size == 0:
                    rest = rest.partition(b"\r\n")[2]
                    break
                body += rest[:size]
                rest = rest[size + 2:]
        else:
            length = 0
            for line in lower.split(b"\r\n"):
                if line.startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            body, rest = rest[:length], rest[length:]
        out.append((status, head, body))
        data = rest
    return out


def assert_answers_ok(data: bytes, raw: bytes) -> None:
    for status, head, body in responses(data):
        assert status < 500, (status, head, body[:300], raw[:300])
        if status >= 400 and body:
            doc = json.loads(body)
            assert set(doc) == {"error"} and set(doc["error"]) == {"message", "type", "param", "code"}


def alive(port: int) -> None:
    data = exchange(port, b"GET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 200"), data[:200]


_token = st.text(alphabet="abcdefghijklmnopqrstuvwxyz-_.!#$%&'*+^`|~0123456789ABC", min_size=1, max_size=12)
_bytes = st.binary(max_size=40) | st.sampled_from([b"\r\n", b"\n", b"\r", b"\x00", b"\t", b" ", b"\x7f",
                                                   b"a" * 9000, b"\xff\xfe"])
_methods = st.sampled_from([b"POST", b"GET", b"PUT", b"HEAD", b"OPTIONS", b"DELETE", b"PATCH", b"FOO", b"post",
                            b"GET GET", b"", b"\x00"])
_paths = st.sampled_from([b"/v1/chat/completions", b"/v1/embeddings", b"/v1/responses", b"/v1/models",
                          b"/p/local/chat/completions", b"/admin/keys", b"/health", b"*", b"", b"/%", b"/a b",
                          b"http://x/v1/models", b"/v1/chat/completions?x=\x01"])
_framings = st.sampled_from(["length", "length", "chunked", "none", "wrong_length", "both", "bad_chunk"])
_bodies = st.sampled_from([b'{"model":"gpt-4o-mini","messages":[]}', b'{"model":"gpt-4o-mini","stream":true}',
                           b'{"model":"mock-gpt","stream":true}', b'{"model":"gpt-4o-mini\\r\\nx: y"}',
                           b'{"model":"\xff"}', b"[" * 5000, b"", b"{}", b"not json"]) | st.binary(max_size=200)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(method=_methods, path=_paths, version=st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/1.1", b"HTTP/2.0",
                                                              b"HTTP/1.1 x"]),
       headers=st.lists(st.tuples(_token.map(str.encode) | _bytes, _bytes), max_size=5),
       body=_bodies, framing=_framings)
def test_raw_requests_never_get_a_5xx_or_kill_the_worker(gw, upstream, method, path, version, headers, body,
                                                         framing):
    upstream.handler = lambda r: json_reply(b'{"ok":true}')
    TRIED["http"] += 1
    lines = [method + b" " + path + b" " + version, b"host: x", b"connection: close"]
    lines += [name + b": " + value for name, value in headers]
    if framing == "length":
        lines.append(b"content-length: " + str(len(body)).encode())
    elif framing == "wrong_length":
        lines.append(b"content-length: " + str(len(body) + 7).encode())
    elif framing == "both":
        lines += [b"content-length: 3", b"transfer-encoding: chunked"]
    if framing in ("chunked", "both"):
        payload = (f"{len(body):x}\r\n".encode() + body + b"\r\n" if body else b"") + b"0\r\n\r\n"
    elif framing == "bad_chunk":
        lines.append(b"transfer-encoding: chunked")
        payload = b"zz\r\n" + body + b"\r\n0\r\n\r\n"
    else:
        payload = body
    raw = b"\r\n".join(lines) + b"\r\n\r\n" + payload
    wrong = framing == "wrong_length"
    assert_answers_ok(exchange(gw.port, raw, timeout=0.5 if wrong else 5.0, may_wait=wrong), raw)
    alive(gw.port)


# -- smuggling: what granian does, and what fastgw forwards ------------------------------------

P = b"POST /p/local/echo HTTP/1.1\r\nhost: x\r\n"
SMUGGLED = b"GET /p/local/smuggled HTTP/1.1\r\nhost: x\r\n\r\n"

# name, raw request, granian's answer(s) as recorded, what the upstream may see
SMUGGLING = [
    # Both headers: hyper frames by Transfer-Encoding, drops Content-Length and closes the
    # connection after the answer (RFC 9112 6.3): the trailing request is never read.
    ("cl_then_te", P + b"content-length: 4\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n" + SMUGGLED, [200], 1),
    ("te_then_cl", P + b"transfer-encoding: chunked\r\ncontent-length: 40\r\n\r\n0\r\n\r\n" + SMUGGLED, [200], 1),
    # Conflicting or malformed lengths and unknown codings: granian's own empty 400.
    ("two_lengths", P + b"content-length: 4\r\ncontent-length: 10\r\n\r\nabcd" + SMUGGLED, [400], 0),
    ("length_list", P + b"content-length: 4, 10\r\n\r\nabcd", [400], 0),
    ("negative_length", P + b"content-length: -4\r\n\r\nabcd", [400], 0),
    ("plus_length", P + b"content-length: +4\r\n\r\nabcd", [400], 0),
    ("te_chunked_identity", P + b"transfer-encoding: chunked, identity\r\n\r\n4\r\nabcd\r\n0\r\n\r\n", [400], 0),
    ("te_identity", P + b"transfer-encoding: identity\r\ncontent-length: 4\r\n\r\nabcd", [400], 0),
    ("te_xchunked", P + b"transfer-encoding: xchunked\r\n\r\n4\r\nabcd\r\n0\r\n\r\n", [400], 0),
    ("te_space_before_colon", P + b"transfer-encoding : chunked\r\n\r\n4\r\nabcd\r\n0\r\n\r\n", [400], 0),
    ("te_on_http10", P.replace(b"HTTP/1.1", b"HTTP/1.0") + b"transfer-encoding: chunked\r\n\r\n4\r\nabcd\r\n0\r\n\r\n",
     [400], 0),
    # Bad chunk sizes: granian ends the body with an error; fastgw answers 400 incomplete_body.
    ("chunk_size_not_hex", P + b"transfer-encoding: chunked\r\n\r\nzz\r\nabcd\r\n0\r\n\r\n", [400], 0),
    ("chunk_size_overflow", P + b"transfer-encoding: chunked\r\n\r\nfffffffffffffffffff\r\nabcd\r\n0\r\n\r\n",
     [400], 0),
    ("chunk_size_negative", P + b"transfer-encoding: chunked\r\n\r\n-4\r\nabcd\r\n0\r\n\r\n", [400], 0),
    ("chunk_shorter_than_size", P + b"transfer-encoding: chunked\r\n\r\n8\r\nabcd\r\n0\r\n\r\n", [400], 0),
    # Pipelined: answered in order, each forwarded as its own request.
    ("pipelined", b"GET /p/local/one HTTP/1.1\r\nhost: x\r\n\r\nGET /p/local/two HTTP/1.1\r\nhost: x\r\n"
     b"connection: close\r\n\r\n", [200, 200], 2),
]


@pytest.mark.parametrize(("name", "raw", "statuses", "forwarded"), SMUGGLING, ids=[c[0] for c in SMUGGLING])
def test_smuggling_attempts(gw, upstream, name, raw, statuses, forwarded):
    upstream.handler = lambda r: json_reply(b'{"ok":true}')
    before = len(upstream.requests)
    data = exchange(gw.port, raw)
    got = [status for status, _, _ in responses(data)]
    # The upstream may still be finishing a request whose body broke off: give it a moment.
    seen = upstream.requests[before:]
    assert got == statuses, (name, data[:500])
    assert len(seen) <= forwarded, [(r.method, r.target) for r in seen]
    for r in seen:
        assert "smuggled" not in r.target
        # Framed by fastgw: never both Content-Length and Transfer-Encoding.
        assert not ("content-length" in r.headers and "transfer-encoding" in r.headers), r.headers
    for status, _, body in responses(data):
        if status >= 400 and body:
            json.loads(body)["error"]
    alive(gw.port)


def test_passthrough_refuses_conflicting_framing_itself():
    """Defence in depth: even if the server in front passed both headers, fastgw would refuse."""
    import asyncio

    from fastgw.errors import GatewayError
    from fastgw.exchange import Exchange
    from fastgw.ingress.passthrough import handle
    from fastgw.routing.providers import Provider

    async def run(headers: list[tuple[bytes, bytes]]) -> int:
        from fastgw.config import ProviderConfig
        from fastgw.upstream.backend import AsyncioBackend

        provider = Provider(ProviderConfig(name="p", type="openai", base_url="http://127.0.0.1:1/v1"),
                            AsyncioBackend())
        scope = {"type": "http", "method": "POST", "path": "/p/p/x", "raw_path": b"/p/p/x", "query_string": b"",
                 "headers": headers}
        ex = Exchange(scope, None, None)  # type: ignore[arg-type]
        try:
            await handle(ex, provider, b"/x")
        except GatewayError as exc:
            return exc.status
        return 0

    assert asyncio.run(run([(b"content-length", b"4"), (b"transfer-encoding", b"chunked")])) == 400
    assert asyncio.run(run([(b"content-length", b"4"), (b"content-length", b"5")])) == 400
