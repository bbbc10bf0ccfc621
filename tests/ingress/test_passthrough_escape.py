"""``/p/{provider}/...`` never reaches anything outside the provider's base URL.

Each attempt is sent byte for byte on a raw socket. The gateway either refuses it
(400/404 in the envelope, or granian's own 400 for a request line it cannot parse), or
the upstream receives a request whose target starts with the provider's base path,
with the provider's Host and credentials, and no traversal a server could act on.
"""

from __future__ import annotations

import socket

import pytest

from fastgw.errors import GatewayError
from fastgw.ingress.passthrough import safe_suffix

ATTEMPTS = [
    "/p/local/../admin/keys",
    "/p/local/%2e%2e/x",
    "/p/local/%2E%2e/x",
    "/p/local/.%2e/x",
    "/p/local/%252e%252e/x",           # double-encoded: an upstream decoding twice would climb
    "/p/local/..;/x",                  # path parameters (servlet containers drop them)
    "/p/local/.;x/y",
    "/p/local/a/%2F/b",
    "/p/local/a%2fb",
    "/p/local/a%252fb",
    "/p/local/a%5cb",
    "/p/local/a\\..\\b",
    "/p/local/a%5c..%5cb",
    "/p/local/./x",
    "/p/local/%00x",
    "/p/local/a%0d%0aX-Injected:%20yes",
    "/p/local/a%250d%250aX-Injected:%20yes",
    "/p/local@127.0.0.1:1/x",          # userinfo trick: no such provider
    "/p/local/@127.0.0.1:1/x",
    "/p/local/http://127.0.0.1:1/x",   # an absolute URL after the provider
    "/p/local//127.0.0.1:1/x",         # a scheme-relative URL
    "/p/local/%2f%2f127.0.0.1:1/x",
]


def send_raw(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data


def status_of(reply: bytes) -> int:
    return int(reply.split(b" ", 2)[1]) if reply.startswith(b"HTTP/1.") else 0


def assert_contained(upstream, port: int) -> None:
    for got in upstream.requests:
        target = got.target
        assert target.startswith("/v1/"), target
        assert got.headers["host"] == f"127.0.0.1:{port}"
        assert got.headers["authorization"] == "Bearer sk-test"
        assert "x-injected" not in got.headers
        for segment in target.split("?")[0].split("/"):
            lowered = segment.lower()
            assert segment not in (".", "..") and "%2e%2e" not in lowered and "%2f" not in lowered, target


@pytest.mark.parametrize("path", ATTEMPTS)
def test_passthrough_path_tricks_stay_under_the_base_url(gateway, upstream, path):
    upstream.handler = lambda r: __import__("upstream_server").json_reply(b'{"ok":true}')
    reply = send_raw(gateway.port, f"GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n".encode())
    status = status_of(reply)
    assert status in (200, 400, 404), reply[:300]
    if status in (400, 404) and b"application/json" in reply.partition(b"\r\n\r\n")[0].lower():
        assert b'"error"' in reply
    assert_contained(upstream, upstream.port)


def test_absolute_form_request_target_cannot_pick_the_origin(gateway, upstream):
    """``GET http://other/... HTTP/1.1`` (proxy form): the upstream is still the provider's."""
    reply = send_raw(gateway.port, b"GET http://127.0.0.1:1/p/local/models HTTP/1.1\r\nhost: x\r\n"
                     b"connection: close\r\n\r\n")
    assert status_of(reply) in (200, 400, 404), reply[:300]
    assert_contained(upstream, upstream.port)


def test_header_injection_and_host_override_are_not_forwarded(gateway, upstream):
    reply = send_raw(gateway.port, b"GET /p/local/models HTTP/1.1\r\nhost: evil.example\r\n"
                     b"x-api-key: client\r\nauthorization: Bearer client\r\ncookie: a=b\r\n"
                     b"x-note: a\r\n b\r\nconnection: close\r\n\r\n")
    # An obsolete folded header line is refused by the server or unfolded; never a new header.
    assert status_of(reply) in (200, 400), reply[:300]
    assert_contained(upstream, upstream.port)
    for got in upstream.requests:
        assert "cookie" not in got.headers and "x-api-key" not in got.headers
        assert "\r" not in "".join(got.headers.values()) and "\n" not in "".join(got.headers.values())
    reply = send_raw(gateway.port, b"GET /p/local/models HTTP/1.1\r\nhost: x\r\nx-a: 1\rx-injected: yes\r\n"
                     b"connection: close\r\n\r\n")
    assert status_of(reply) in (0, 200, 400), reply[:300]
    assert_contained(upstream, upstream.port)


@pytest.mark.parametrize("rest", [b"/chat/completions", b"/models", b"/a..b/c", b"/v1/files/file-1.json",
                                  b"/a%20b", b"/x;y"])
def test_ordinary_paths_pass(rest):
    assert safe_suffix(rest) == rest


@pytest.mark.parametrize("rest", [b"/..", b"/%2e%2e", b"/%252e%252e", b"/..;x", b"/a%2fb", b"/a%5cb", b"/a\\b",
                                  b"/%0d%0a", b"/a%00"])
def test_escaping_paths_are_refused(rest):
    with pytest.raises(GatewayError) as info:
        safe_suffix(rest)
    assert info.value.status == 400
