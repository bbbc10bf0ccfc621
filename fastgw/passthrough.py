"""ANY /p/{provider}/{path}: raw passthrough to a configured provider.

The request goes to ``{provider base URL}/{path}`` with the provider's
credentials instead of the client's, streaming both ways: the client's body is
forwarded as it arrives, the upstream's answer as it comes. The path can never
leave the provider's base URL: ``.`` and ``..`` segments (encoded or not) are
refused, and the origin is always the provider's own.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from urllib.parse import unquote

from fastgw.body import ClientDisconnected
from fastgw.errors import GatewayError, bad_request
from fastgw.exchange import Exchange
from fastgw.fastpath import HOP_BY_HOP, open_upstream, relay_body
from fastgw.providers import Provider

# Client headers never forwarded: hop-by-hop, the origin's host, and any credential
# (the provider's own replace them).
_DROP_REQUEST = HOP_BY_HOP | {
    b"host",
    b"authorization",
    b"x-api-key",
    b"api-key",
    b"x-goog-api-key",
    b"cookie",
}


def safe_suffix(raw_rest: bytes) -> bytes:
    """``raw_rest`` (after ``/p/{provider}``) checked to stay under the base path."""
    for segment in raw_rest.split(b"/"):
        decoded = unquote(segment.decode("latin-1"))
        if decoded in (".", "..") or "/" in decoded or "\\" in decoded:
            raise bad_request("The passthrough path may not contain '.', '..' or encoded '/' segments.",
                              param="path", code="invalid_path")
    return raw_rest


async def _client_body(ex: Exchange) -> AsyncIterator[bytes]:
    more = True
    while more:
        message = await ex.receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected()
        more = message.get("more_body", False)
        chunk = message.get("body", b"")
        if chunk:
            yield chunk


async def handle(ex: Exchange, provider: Provider, raw_rest: bytes) -> None:
    if provider.pool is None:
        raise GatewayError(404, f"Provider '{provider.name}' has no upstream to pass through to.",
                           type="invalid_request_error", code="no_upstream")
    suffix = safe_suffix(raw_rest)
    scope = ex.scope
    method = scope["method"].encode()
    query = scope.get("query_string", b"")
    headers: list[tuple[bytes, bytes]] = [(b"host", provider.host_header)]
    framed = False
    client_auth = None
    for name, value in scope["headers"]:
        if name == b"authorization":
            client_auth = value
        if name in _DROP_REQUEST:
            if name == b"transfer-encoding":
                framed = True
            continue
        if name == b"content-length":
            framed = True
        headers.append((name, value))
    if provider.forward_client_key and client_auth is not None:
        headers.append((b"authorization", client_auth))
    else:
        headers += provider.auth_headers
    headers += provider.extra_headers
    if framed and not any(n == b"content-length" for n, _ in headers):
        headers.append((b"transfer-encoding", b"chunked"))
    body = _client_body(ex) if framed else b""
    ex.path_taken = "passthrough"
    resp = await open_upstream(provider, method, provider.target(suffix, query), headers, body, ex)
    try:
        out = [(k, v) for k, v in resp.headers if k not in HOP_BY_HOP]
        content_type = resp.header(b"content-type") or b""
        await relay_body(ex, resp, provider, stream=content_type.startswith(b"text/event-stream"), headers=out)
    finally:
        await resp.aclose()
