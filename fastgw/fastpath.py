"""The byte relay: a request to an OpenAI-compatible upstream and its answer back.

The client's body bytes go upstream as given (or as :mod:`fastgw.body` rewrote
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

import asyncio
import logging
from collections.abc import AsyncIterable
from time import perf_counter
from typing import Protocol

import msgspec
from h11._headers import Headers

from fastgw import metrics
from fastgw.errors import (
    GatewayError,
    envelope,
    overloaded,
    sse_error_event,
    type_for_status,
    upstream_timeout,
    upstream_unreachable,
)
from fastgw.exchange import Exchange
from fastgw.providers import Provider
from fastgw.upstream.client import (
    UpstreamBroken,
    UpstreamError,
    UpstreamResponse,
    UpstreamTimeout,
    UpstreamUnreachable,
    send,
)
from fastgw.upstream.connection import with_content_length
from fastgw.upstream.pool import PoolTimeout

log = logging.getLogger("fastgw.fastpath")

ERROR_BODY_LIMIT = 1024 * 1024

# Upstream response headers worth keeping: content type, the upstream's request
# id, rate limits. Hop-by-hop headers (RFC 9110 7.6.1) are always dropped.
KEEP_HEADERS = frozenset(
    {
        b"content-type",
        b"content-length",
        b"x-request-id",
        b"request-id",
        b"retry-after",
        b"retry-after-ms",
        b"openai-processing-ms",
        b"openai-version",
        b"x-envoy-upstream-service-time",
    }
)
KEEP_PREFIXES = (b"x-ratelimit-", b"ratelimit", b"anthropic-ratelimit-", b"x-groq-")
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)


def _content_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    for name, value in headers:
        if name == b"content-length":
            return int(value)
    return None


class Tap(Protocol):
    def feed(self, chunk: bytes) -> bytes: ...
    def close(self) -> bytes: ...


def kept_headers(upstream: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    out = []
    for name, value in upstream:  # names arrive lowercased
        if name in KEEP_HEADERS or name.startswith(KEEP_PREFIXES):
            out.append((name, value))
    return out


def upstream_headers(provider: Provider, body_length: int, client_auth: bytes | None) -> list[tuple[bytes, bytes]] | Headers:
    """The request headers for a JSON POST to ``provider``."""
    if provider.forward_client_key and client_auth:
        headers = [
            (b"host", provider.host_header),
            (b"content-type", b"application/json"),
            (b"content-length", str(body_length).encode()),
            (b"accept-encoding", b"identity"),
            (b"authorization", client_auth),
        ]
        return headers + provider.extra_headers
    # The provider's fixed headers were validated once; only the length is new.
    return with_content_length(provider.json_request_headers, body_length)


def upstream_failure(exc: BaseException, provider: Provider) -> GatewayError:
    """The client-facing error for a failure before any response byte."""
    name = provider.name
    if isinstance(exc, UpstreamTimeout):
        return upstream_timeout(f"The upstream provider '{name}' timed out ({exc.kind}).")
    if isinstance(exc, PoolTimeout):
        return overloaded(f"The gateway has no free connection to provider '{name}': {exc}. Retry later.")
    if isinstance(exc, UpstreamUnreachable):
        return upstream_unreachable(f"The upstream provider '{name}' is unreachable: {_clean(exc)}")
    return GatewayError(502, f"The upstream provider '{name}' failed: {_clean(exc)}",
                        type="upstream_error", code="upstream_error")


def _clean(exc: BaseException) -> str:
    text = str(exc)
    return text.replace("the upstream is unreachable: ", "")[:300]


async def open_upstream(
    provider: Provider,
    method: bytes,
    target: bytes,
    headers: list[tuple[bytes, bytes]] | Headers,
    body: bytes | AsyncIterable[bytes],
    ex: Exchange | None = None,
) -> UpstreamResponse:
    """Send a request; failures before the response become a :class:`GatewayError`.

    With ``ex``, the exchange learns the response (its upstream wait is left out
    of the gateway's overhead).
    """
    assert provider.pool is not None
    try:
        resp = await send(provider.pool, method, target, headers, body, provider.timeouts)
    except (UpstreamError, PoolTimeout) as exc:
        metrics.observe_upstream_error(provider.name, "pool_timeout" if isinstance(exc, PoolTimeout)
                                       else getattr(exc, "kind", "error"))
        raise upstream_failure(exc, provider) from None
    if ex is not None:
        ex.upstream = resp
        ex.upstream_wait = resp.wait
    if resp.status >= 500 or resp.status == 429:
        metrics.observe_upstream_error(provider.name, f"status_{resp.status}")
    return resp


class _ErrorShape(msgspec.Struct):
    error: dict[str, msgspec.Raw] | None = None


_error_decoder = msgspec.json.Decoder(_ErrorShape)


def error_body(status: int, body: bytes, provider: Provider) -> bytes:
    """An upstream error body as an OpenAI envelope: kept when it is one, wrapped otherwise."""
    key = provider.cfg.api_key
    if key and key.encode() in body:
        body = body.replace(key.encode(), b"[REDACTED]")
    try:
        shape = _error_decoder.decode(body)
        if shape.error is not None and "message" in shape.error:
            return body
    except msgspec.DecodeError:
        pass
    text = body.decode("utf-8", "replace").strip()[:1000] or f"HTTP {status} from the upstream"
    return envelope(f"Upstream provider '{provider.name}' answered {status}: {text}", type_for_status(status),
                    None, "upstream_error")


async def relay_error(ex: Exchange, resp: UpstreamResponse, provider: Provider) -> None:
    """Relay an upstream 4xx/5xx: its status, rate-limit headers and an envelope body."""
    data = await resp.read(ERROR_BODY_LIMIT)
    body = error_body(resp.status, data, provider)
    extra = [(k, v) for k, v in kept_headers(resp.headers) if k not in (b"content-type", b"content-length")]
    await ex.respond(resp.status, body, extra=extra)


async def relay(
    ex: Exchange,
    provider: Provider,
    target: bytes,
    body: bytes,
    *,
    stream: bool,
    client_auth: bytes | None = None,
    tap: Tap | None = None,
) -> None:
    """POST ``body`` to ``target`` on ``provider`` and relay the answer to the client."""
    headers = upstream_headers(provider, len(body), client_auth)
    async with watch_client(ex):
        resp = await open_upstream(provider, b"POST", target, headers, body, ex)
        try:
            if resp.status >= 400:
                await relay_error(ex, resp, provider)
                return
            await relay_body(ex, resp, provider, stream=stream, tap=tap)
        finally:
            await resp.aclose()


def log_midstream_failure(ex: Exchange, provider: Provider, exc: UpstreamError, what: str = "stream") -> None:
    """Count and log an upstream failure after the answer started (no secrets: kind only)."""
    metrics.observe_upstream_error(provider.name, exc.kind)
    ex.error_type = "upstream_error"
    log.warning("request %s: provider %s failed mid-%s: %s", ex.request_id, provider.name, what,
                f"timeout ({exc.kind})" if isinstance(exc, UpstreamTimeout) else exc)


def midstream_error_event(ex: Exchange, provider: Provider, exc: UpstreamError) -> bytes:
    """The one SSE error event that ends a stream whose upstream timed out or broke (logged)."""
    log_midstream_failure(ex, provider, exc)
    if isinstance(exc, UpstreamTimeout):
        return sse_error_event(f"The upstream provider '{provider.name}' timed out mid-stream ({exc.kind}).",
                               "timeout", "upstream_timeout")
    return sse_error_event(f"The upstream provider '{provider.name}' closed the stream unexpectedly.",
                           "upstream_error",
                           "upstream_disconnected" if isinstance(exc, UpstreamBroken) else "upstream_error")


class watch_client:
    """Cancel the exchange when the client disconnects, and swallow that cancellation.

    The body was read already, so the next ASGI message can only be
    ``http.disconnect``. granian's ``send`` never fails for a client that left,
    so this is the only way to notice one. The watcher costs a task and a
    pending granian ``receive()`` (measured: ~80 us and ~60 KB per stream, about
    a quarter of a short stream's CPU), so it is only started when an exchange
    lasts longer than ``WATCH_AFTER`` seconds; a timer costs far less. A client
    leaving is then noticed within ``WATCH_AFTER`` plus a moment (well within
    a second), and an exchange shorter than that simply runs to its end. Once
    started, a disconnect cancels the exchange's task, which closes the
    upstream response (and its connection) at once, even while the upstream is
    silent.
    """

    __slots__ = ("_ex", "_gone", "_handle", "_task", "_watcher")

    def __init__(self, ex: Exchange) -> None:
        self._ex = ex
        self._gone = False
        self._watcher: asyncio.Task[None] | None = None

    async def __aenter__(self) -> None:
        self._task = asyncio.current_task()
        self._handle = _loop().call_later(WATCH_AFTER, self._start)

    def _start(self) -> None:
        self._watcher = _loop().create_task(self._watch())

    async def _watch(self) -> None:
        while True:
            message = await self._ex.receive()
            if message["type"] == "http.disconnect":
                self._gone = True
                assert self._task is not None
                self._task.cancel()
                return

    async def __aexit__(self, exc_type: object, exc: object, tb: object) -> bool:
        self._handle.cancel()
        if self._watcher is not None:
            self._watcher.cancel()
        if self._gone and exc_type is asyncio.CancelledError:
            assert self._task is not None
            self._task.uncancel()
            raise ClientGone()
        return False


WATCH_AFTER = 0.5
_loop = asyncio.get_running_loop


class ClientGone(Exception):
    """The client disconnected; the exchange was abandoned."""


async def relay_body(
    ex: Exchange,
    resp: UpstreamResponse,
    provider: Provider,
    *,
    stream: bool,
    tap: Tap | None = None,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    """Relay status, headers and body bytes as they arrive.

    Each chunk goes to the client as soon as it is read (through ``tap`` when
    given). A sized, non-streaming body's last piece is sent with
    ``more_body=False`` (one ASGI send instead of two).
    """
    out = headers if headers is not None else kept_headers(resp.headers)
    if tap is not None and stream:
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
