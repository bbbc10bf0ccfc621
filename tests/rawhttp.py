"""A raw HTTP client for byte-level assertions (stdlib http.client: no re-encoding)."""

from __future__ import annotations

import http.client
import json
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
