"""The upstream call: request headers, one request sent through the pool, and its failures.

Shared by every egress (byte relay, translated providers, passthrough, model
discovery):

* :func:`upstream_headers` -- the headers of a JSON POST to a provider;
* :func:`open_upstream` -- send a request; any failure before the response
  (connect, TLS, refused, timeout before the first byte, a full pool) becomes
  the client-facing :class:`~fastgw.errors.GatewayError` of
  :func:`upstream_failure` (502 / 504 / 503), counted in the metrics;
* :func:`kept_headers` -- which upstream response headers reach the client
  (content type, request ids, rate limits; never hop-by-hop ones);
* :func:`error_body` -- an upstream 4xx/5xx body as an OpenAI envelope, with the
  provider's key redacted;
* :func:`midstream_error_event` -- the one SSE event that ends a stream whose
  upstream failed after the answer started (counted and logged, no secrets).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterable

import msgspec
from h11._headers import Headers

from fastgw.controls import metrics
from fastgw.errors import (
    GatewayError,
    envelope,
    overloaded,
    type_for_status,
    upstream_timeout,
    upstream_unreachable,
)
from fastgw.exchange import Exchange
from fastgw.routing.providers import Provider
from fastgw.upstream.client import (
    RequestRefused,
    Timeouts,
    UpstreamBroken,
    UpstreamError,
    UpstreamResponse,
    UpstreamTimeout,
    UpstreamUnreachable,
    send,
)
from fastgw.upstream.connection import with_content_length
from fastgw.upstream.pool import PoolTimeout

log = logging.getLogger("fastgw.upstream.call")

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


def kept_headers(upstream: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    out = []
    for name, value in upstream:  # names arrive lowercased
        if name in KEEP_HEADERS or name.startswith(KEEP_PREFIXES):
            out.append((name, value))
    return out


def relayed_headers(resp: UpstreamResponse) -> list[tuple[bytes, bytes]]:
    """:func:`kept_headers` minus the framing ones, for an answer whose body the gateway writes."""
    return [(k, v) for k, v in kept_headers(resp.headers) if k not in (b"content-type", b"content-length")]


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
    if isinstance(exc, RequestRefused):
        return GatewayError(400, f"The request cannot be sent to provider '{name}': {_clean(exc)}",
                            type="invalid_request_error", code="invalid_request")
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
    timeouts: Timeouts | None = None,
) -> UpstreamResponse:
    """Send a request; failures before the response become a :class:`GatewayError`.

    ``timeouts`` replaces the provider's (an attempt loop bounding one attempt by its deadline).
    With ``ex``, the exchange learns the response (its upstream wait is left out
    of the gateway's overhead).
    """
    assert provider.pool is not None
    try:
        resp = await send(provider.pool, method, target, headers, body, timeouts or provider.timeouts)
    except (UpstreamError, PoolTimeout) as exc:
        if not isinstance(exc, RequestRefused):
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


def redact_key(body: bytes, provider: Provider) -> bytes:
    """``body`` with the provider's secrets (an upstream may echo them in an error) redacted."""
    for key in provider.secrets:
        if key.encode() in body:
            body = body.replace(key.encode(), b"[REDACTED]")
    return body


def error_body(status: int, body: bytes, provider: Provider) -> bytes:
    """An upstream error body as an OpenAI envelope: kept when it is one, wrapped otherwise."""
    body = redact_key(body, provider)
    try:
        shape = _error_decoder.decode(body)
        if shape.error is not None and "message" in shape.error:
            return body
    except msgspec.DecodeError:
        pass
    text = body.decode("utf-8", "replace").strip()[:1000] or f"HTTP {status} from the upstream"
    return envelope(f"Upstream provider '{provider.name}' answered {status}: {text}", type_for_status(status),
                    None, "upstream_error")


def log_midstream_failure(ex: Exchange, provider: Provider, exc: UpstreamError, what: str = "stream") -> None:
    """Count and log an upstream failure after the answer started (no secrets: kind only)."""
    metrics.observe_upstream_error(provider.name, exc.kind)
    ex.error_type = "upstream_error"
    log.warning("request %s: provider %s failed mid-%s: %s", ex.request_id, provider.name, what,
                f"timeout ({exc.kind})" if isinstance(exc, UpstreamTimeout) else exc)


def midstream_error_event(ex: Exchange, provider: Provider, exc: UpstreamError) -> bytes:
    """The one SSE error event that ends a stream whose upstream timed out or broke (logged)."""
    log_midstream_failure(ex, provider, exc)
    event = ex.errors.event
    if isinstance(exc, UpstreamTimeout):
        return event(f"The upstream provider '{provider.name}' timed out mid-stream ({exc.kind}).",
                     "timeout", "upstream_timeout")
    return event(f"The upstream provider '{provider.name}' closed the stream unexpectedly.",
                 "upstream_error", "upstream_disconnected" if isinstance(exc, UpstreamBroken) else "upstream_error")
