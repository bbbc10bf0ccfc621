"""The byte relay: a request to an OpenAI-compatible upstream and its answer back.

The client's body bytes go upstream as given (or as :mod:`fastgw.ingress.body` rewrote
them); the upstream's status, content type and body come back as they arrive.
SSE is forwarded chunk by chunk, never decoded, re-framed, buffered or
compressed.

Observers. ``relay`` takes an optional ``tap``: an object with
``feed(chunk: bytes) -> bytes`` and ``close() -> bytes`` that sees every body
chunk on its way to the client and returns what to forward (normally the same
object, so nothing is copied). Usage accounting hangs off this hook.

Failures map to the OpenAI envelope: connect/TLS/refused -> 502, timeouts ->
504 (type ``timeout``), pool exhausted -> 503; an upstream 4xx/5xx is relayed
with its status and body (wrapped in the envelope when it is not one). When the
upstream breaks mid-stream, the client gets one SSE ``data: {"error": ...}``
event and the stream closes without ``[DONE]``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from time import perf_counter
from typing import Protocol

from fastgw.exchange import Exchange
from fastgw.routing.providers import Provider
from fastgw.upstream.call import (
    ERROR_BODY_LIMIT,
    error_body,
    kept_headers,
    log_midstream_failure,
    midstream_error_event,
    open_upstream,
    relayed_headers,
    upstream_headers,
)
from fastgw.upstream.client import Timeouts, UpstreamError, UpstreamResponse
from fastgw.upstream.connection import HeaderItems, with_content_length
from fastgw.upstream.watch import watch_client


def _content_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    for name, value in headers:
        if name == b"content-length":
            return int(value)
    return None


class Tap(Protocol):
    def feed(self, chunk: bytes) -> bytes: ...
    def close(self) -> bytes: ...


async def relay_error(ex: Exchange, resp: UpstreamResponse, provider: Provider) -> None:
    """Relay an upstream 4xx/5xx: its status, rate-limit headers and an envelope body."""
    status, body, extra = await error_answer(resp, provider)
    await ex.respond(status, body, extra=extra)


async def error_answer(resp: UpstreamResponse,
                       provider: Provider) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    """An upstream 4xx/5xx as the client would get it: status, envelope body, kept headers."""
    data = await resp.read(ERROR_BODY_LIMIT)
    body = error_body(resp.status, data, provider)
    return resp.status, body, relayed_headers(resp)


async def open_relay(ex: Exchange, provider: Provider, target: bytes, body: bytes,
                     client_auth: bytes | None = None, request_headers: HeaderItems | None = None,
                     timeouts: Timeouts | None = None) -> UpstreamResponse:
    """POST ``body``; return once the upstream's status and headers are in (nothing sent to the client).

    ``request_headers``: the fixed headers to send instead of the provider's (a rotated key's).
    """
    if request_headers is not None and not (provider.forward_client_key and client_auth):
        headers = with_content_length(request_headers, len(body))
    else:
        headers = upstream_headers(provider, len(body), client_auth)
    return await open_upstream(provider, b"POST", target, headers, body, ex, timeouts)


async def relay(
    ex: Exchange,
    provider: Provider,
    target: bytes,
    body: bytes,
    *,
    stream: bool,
    client_auth: bytes | None = None,
    tap: Tap | None = None,
    headers: HeaderItems | None = None,
    on_error: Callable[[Exchange, UpstreamResponse, Provider], Awaitable[None]] | None = None,
) -> None:
    """POST ``body`` to ``target`` on ``provider`` and relay the answer to the client.

    ``headers``: the request headers to send (default: the provider's JSON POST headers);
    ``on_error``: how an upstream 4xx/5xx reaches the client (default: :func:`relay_error`).
    """
    if headers is None:
        headers = upstream_headers(provider, len(body), client_auth)
    async with watch_client(ex):
        resp = await open_upstream(provider, b"POST", target, headers, body, ex)
        try:
            if resp.status >= 400:
                await (on_error or relay_error)(ex, resp, provider)
                return
            await relay_body(ex, resp, provider, stream=stream, tap=tap)
        finally:
            await resp.aclose()


async def relay_body(
    ex: Exchange,
    resp: UpstreamResponse,
    provider: Provider,
    *,
    stream: bool,
    tap: Tap | None = None,
    headers: list[tuple[bytes, bytes]] | None = None,
    keep_length: bool = False,
) -> None:
    """Relay status, headers and body bytes as they arrive.

    Each chunk goes to the client as soon as it is read (through ``tap`` when
    given). A sized, non-streaming body's last piece is sent with
    ``more_body=False`` (one ASGI send instead of two).
    """
    out = headers if headers is not None else kept_headers(resp.headers)
    if tap is not None and stream and not keep_length:
        # A stream's tap may withhold bytes: the upstream's length no longer holds.
        out = [h for h in out if h[0] != b"content-length"]
    ex.upstream = resp
    ex.upstream_wait = resp.wait
    out += ex.gateway_headers()
    send = ex.send
    await ex.start(resp.status, out)
    next_chunk = resp.next_chunk
    remaining = -1 if stream else _content_length(resp.headers)
    if remaining is None:
        remaining = -1
    try:
        while (chunk := await next_chunk()) is not None:
            if not ex.t_first:
                ex.t_first = perf_counter()
            last = False
            if remaining > 0:
                remaining -= len(chunk)
                last = remaining <= 0 and await next_chunk() is None
            if tap is not None:
                chunk = tap.feed(chunk)
                if last:
                    chunk += tap.close()
            if last:
                await send({"type": "http.response.body", "body": chunk, "more_body": False})
                return
            if chunk:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        tail = tap.close() if tap is not None else b""
    except UpstreamError as exc:
        if not stream:
            log_midstream_failure(ex, provider, exc, "response")
            raise  # headers went out with a length: only aborting the connection tells the client
        await send({"type": "http.response.body", "body": midstream_error_event(ex, provider, exc),
                    "more_body": False})
        return
    await send({"type": "http.response.body", "body": tail, "more_body": False})
