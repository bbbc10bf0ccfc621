"""A raw HTTP client for byte-level assertions (stdlib http.client: no re-encoding)."""

from __future__ import annotations

import http.client
import json
import socket
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes
    chunks: list[bytes]

    def json(self) -> Any:
        return json.loads(self.body)

    def error(self) -> dict[str, Any]:
        doc = self.json()
        assert set(doc) == {"error"}, doc
        assert set(doc["error"]) == {"message", "type", "param", "code"}, doc
        return doc["error"]


def request(url: str, method: str, path: str, body: bytes | dict[str, Any] | None = None,
            headers: dict[str, str] | None = None, timeout: float = 30.0) -> RawResponse:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    if isinstance(body, dict):
        body = json.dumps(body).encode()
    hdrs = {"content-type": "application/json"} if body is not None else {}
    hdrs.update(headers or {})
    conn.request(method, path, body=body, headers=hdrs)
    resp = conn.getresponse()
    chunks = []
    while True:
        chunk = resp.read1(65536)
        if not chunk:
            break
        chunks.append(chunk)
    conn.close()
    return RawResponse(resp.status, {k.lower(): v for k, v in resp.getheaders()}, b"".join(chunks), chunks)


def post(url: str, path: str, body: bytes | dict[str, Any], headers: dict[str, str] | None = None,
         timeout: float = 30.0) -> RawResponse:
    return request(url, "POST", path, body, headers, timeout)


def open_stream(port: int, body: bytes, until: bytes, path: str = "/v1/chat/completions") -> socket.socket:
    """POST ``body`` on a raw socket and read until ``until`` arrived; the caller closes it
    (a client leaving mid-stream) or keeps it open (a request in flight)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(f"POST {path} HTTP/1.1\r\nhost: x\r\ncontent-length: {len(body)}\r\n\r\n".encode() + body)
    seen = b""
    while until not in seen:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"the stream ended before {until!r} arrived: {seen[-300:]!r}")
        seen += chunk
    return sock
