"""ANY /p/{provider}/{path}: raw passthrough to a configured provider.

The request goes to ``{provider base URL}/{path}`` with the provider's
credentials instead of the client's, streaming both ways: the client's body is
forwarded as it arrives, the upstream's answer as it comes. The path can never
leave the provider's base URL: ``.`` and ``..`` segments (encoded once or more,
or with ``;`` parameters), encoded slashes and backslashes and control
characters are refused, and the origin (scheme, host, port) is always the
provider's own: the path is only ever appended to its base path.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING
from urllib.parse import unquote

from fastgw.admission.slowclient import body_deadline_error
from fastgw.controls.passthrough_usage import PassthroughTap
from fastgw.egress.relay import relay_body
from fastgw.errors import GatewayError, bad_request
from fastgw.exchange import ClientGone, Exchange, header
from fastgw.routes import Endpoint, RouteTable
from fastgw.routing.providers import Provider
from fastgw.upstream.call import ERROR_BODY_LIMIT, HOP_BY_HOP, open_upstream, redact_key

if TYPE_CHECKING:
    from fastgw.app import Gateway

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


_SIZED = frozenset({b"content-type", b"content-length"})
_DOT_SEGMENTS = (".", "..")


def _decoded(segment: str) -> str:
    """``segment`` percent-decoded until stable (an upstream may decode twice), at most 4 times."""
    for _ in range(4):
        once = unquote(segment)
        if once == segment:
            break
        segment = once
    return segment


def safe_suffix(raw_rest: bytes) -> bytes:
    """``raw_rest`` (after ``/p/{provider}``) checked to stay under the base path."""
    for segment in raw_rest.split(b"/"):
        decoded = _decoded(segment.decode("latin-1"))
        if (decoded.split(";", 1)[0] in _DOT_SEGMENTS or "/" in decoded or "\\" in decoded
                or any(ord(c) < 0x20 or ord(c) == 0x7F for c in decoded)):
            raise bad_request("The passthrough path may not contain '.', '..', encoded '/' or '\\' segments "
                              "or control characters.", param="path", code="invalid_path")
    return raw_rest


async def _client_body(ex: Exchange, timeout: float) -> AsyncIterator[bytes]:
    """The client's body as it arrives, all of it within ``timeout`` seconds (else 408)."""
    more = True
    deadline = asyncio.get_running_loop().time() + timeout
    while more:
        try:
            async with asyncio.timeout_at(deadline):
                message = await ex.receive()
        except TimeoutError:
            raise body_deadline_error(timeout) from None
        if message["type"] == "http.disconnect":
            raise ClientGone()
        more = message.get("more_body", False)
        chunk = message.get("body", b"")
        if chunk:
            yield chunk


def _headers_out(headers: list[tuple[bytes, bytes]], provider: Provider) -> list[tuple[bytes, bytes]]:
    """The upstream's response headers minus hop-by-hop ones and any that echo a provider key."""
    keys = [key.encode() for key in provider.secrets]
    return [(k, v) for k, v in headers if k not in HOP_BY_HOP and not any(key in v for key in keys)]


def register(table: RouteTable) -> None:
    table.add("/p/", Endpoint(passthrough, admitted=True))


async def passthrough(gw: Gateway, ex: Exchange, token: str | None) -> None:
    """Find the provider named in the path, check the key, and relay."""
    raw_path: bytes = ex.scope.get("raw_path") or ex.scope["path"].encode()
    raw_path = raw_path.split(b"?", 1)[0]
    _, _, rest = raw_path.partition(b"/p/")
    name, _, tail = rest.partition(b"/")
    provider = gw.router.provider_named(name)
    if provider is None:
        raise GatewayError(404, f"No provider named '{name.decode('latin-1')}' is configured.",
                           type="invalid_request_error", code="unknown_provider")
    if token is not None:
        ex.key = await gw.controls.check_key_any_model(token)
        if ex.key.models:
            raise GatewayError(403, "This key is limited to some models; the raw passthrough is not "
                               "available to it.", type="permission_error", code="model_not_allowed")
    ex.provider = provider.name
    ex.provider_type = provider.type
    await handle(ex, provider, b"/" + tail, gw.config.server.body_timeout)


async def handle(ex: Exchange, provider: Provider, raw_rest: bytes, body_timeout: float = 60.0) -> None:
    if provider.pool is None:
        raise GatewayError(404, f"Provider '{provider.name}' has no upstream to pass through to.",
                           type="invalid_request_error", code="no_upstream")
    suffix = safe_suffix(raw_rest)
    scope = ex.scope
    method = scope["method"].encode()
    query = scope.get("query_string", b"")
    headers: list[tuple[bytes, bytes]] = [(b"host", provider.host_header)]
    framed = False
    lengths = [v for n, v in scope["headers"] if n == b"content-length"]
    if len(set(lengths)) > 1 or (lengths and header(scope, b"transfer-encoding") is not None):
        # Ambiguous framing (RFC 9112 6.3): never forwarded, whatever the server made of it.
        raise bad_request("The request has conflicting Content-Length / Transfer-Encoding headers.",
                          code="ambiguous_framing")
    # The first Authorization header: the one the gateway's auth check read.
    client_auth = header(scope, b"authorization")
    for name, value in scope["headers"]:
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
    body = _client_body(ex, body_timeout) if framed else b""
    ex.path_taken = "passthrough"
    resp = await open_upstream(provider, method, provider.target(suffix, query), headers, body, ex)
    content_type = resp.header(b"content-type") or b""
    if resp.status >= 400:
        # An error is relayed as the provider sent it, except for its key if it echoed it.
        try:
            body = redact_key(await resp.read(ERROR_BODY_LIMIT), provider)
        finally:
            await resp.aclose()
        extra = [(k, v) for k, v in _headers_out(resp.headers, provider) if k not in _SIZED]
        await ex.respond(resp.status, body, content_type=content_type or b"application/octet-stream", extra=extra)
        return
    tap = PassthroughTap(suffix, content_type)
    ex.tap = tap
    ex.stream = tap.stream
    try:
        out = _headers_out(resp.headers, provider)
        await relay_body(ex, resp, provider, stream=content_type.startswith(b"text/event-stream"), headers=out,
                         tap=tap, keep_length=True)
    finally:
        await resp.aclose()
        if not ex.upstream_model:
            ex.upstream_model = tap.model or ""
