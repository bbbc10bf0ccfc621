"""Model endpoints served by a provider that does not speak OpenAI (Anthropic, Gemini).

:func:`handle` is the translated branch of :func:`fastgw.ingress.openai.dispatch`:
the client's OpenAI request goes through :mod:`fastgw.translate` on its way up,
the provider's answer through it on its way down. The I/O is the fast path's own
(:func:`fastgw.upstream.call.open_upstream` for the request and its failures,
:class:`fastgw.upstream.watch.watch_client` so a client disconnect cancels the upstream
exchange at once).

Endpoints (``suffix``):

* ``/chat/completions`` -- ``build_request`` -> POST to the provider -> on a 2xx,
  ``translate_response`` (one JSON answer) or the provider's
  ``StreamTranslator`` (every upstream chunk is fed as it arrives and whatever it
  yields is sent at once: the answer is never buffered).
* ``/responses`` -- ``responses_to_chat`` then as chat, the chat output chained
  through ``chat_to_responses`` / ``ResponsesStreamTranslator``.
* ``/embeddings`` -- Gemini only (``batchEmbedContents``); Anthropic has none (400).
* ``/completions`` -- legacy completions: 400 ``unsupported_endpoint``.

Errors: a request the provider cannot honour -> the :class:`TranslationError`'s
status and envelope (a 400 naming the param); a provider 4xx/5xx ->
``translate_error``'s status and envelope, keeping rate-limit / retry-after headers;
connect failures, timeouts and a full pool -> 502 / 504 / 503 as on the fast path;
a malformed 2xx body -> 502. When the upstream fails mid-stream (timeout or broken
connection) the client gets one error event (chat: ``data: {"error": ...}``;
Responses: ``error`` + ``response.failed``) and the stream ends without
``[DONE]``; a provider error event mid-stream is translated the same way.

:func:`handle` returns the exchange's token :class:`~fastgw.tokens.Usage` (what
the provider reported, also when the client did not ask for usage) or ``None``
when there is none (an error answered before any body, an unsupported endpoint).
"""

from __future__ import annotations

import logging
from time import perf_counter
from types import ModuleType
from typing import Any

import msgspec

from fastgw.controls.estimate import StreamSeen
from fastgw.egress.messages import record_dropped
from fastgw.errors import GatewayError, bad_request
from fastgw.exchange import Exchange
from fastgw.ingress import body as bodies
from fastgw.routing.providers import Provider
from fastgw.routing.router import Route
from fastgw.tokens import Usage
from fastgw.translate import anthropic, gemini
from fastgw.translate.errors import TranslationError
from fastgw.translate.responses import ResponsesStreamTranslator, chat_to_responses, responses_to_chat
from fastgw.translate.strict import refusal as strict_refusal
from fastgw.upstream.call import (
    ERROR_BODY_LIMIT,
    midstream_error_event,
    open_upstream,
    relayed_headers,
    upstream_failure,
)
from fastgw.upstream.client import Timeouts, UpstreamError, UpstreamResponse
from fastgw.upstream.watch import watch_client

__all__ = ["handle"]

log = logging.getLogger("fastgw.egress.translated")

# A successful non-streaming answer larger than this is cut (and then fails to decode: 502).
BODY_LIMIT = 64 * 1024 * 1024

_TRANSLATORS: dict[str, ModuleType] = {"anthropic": anthropic, "gemini": gemini}
_SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]


class Call:
    """One translated request, built once: what to send, and how to read the answer."""

    __slots__ = ("dropped", "encoding", "headers", "include_usage", "kind", "model", "module", "path",
                 "payload", "responses", "stream", "upstream_model")

    def __init__(self, kind: str, module: ModuleType, model: str, upstream_model: str, path: str,
                 headers: dict[str, str], payload: bytes) -> None:
        self.kind = kind  # chat | embeddings
        self.module = module
        self.model = model  # the name the client sent (answers carry it)
        self.upstream_model = upstream_model
        self.path = path
        self.headers = headers
        self.payload = payload
        self.stream = False
        self.include_usage = False
        self.responses: dict[str, Any] | None = None
        self.encoding = "float"
        self.dropped: list[str] = []  # request fields the translation left out (named in a header)


async def handle(ex: Exchange, provider: Provider, route: Route, suffix: str, body: bytes,
                 routing: Any) -> Usage | None:
    """Serve one model endpoint for a translated provider; see the module docstring.

    ``body`` is the client's raw JSON body (already read and known to decode to an
    object with a valid ``model``); ``routing`` is its :class:`fastgw.body.Routing`.
    Raises :class:`GatewayError` for anything answered before the response started.
    """
    call = prepare(provider, route.model, route.upstream_model, suffix, body, routing)
    async with watch_client(ex):
        resp = await open_call(ex, provider, call)
        try:
            if resp.status >= 400:
                status, data, extra = await error_answer(ex, resp, call)
                await ex.respond(status, data, extra=extra)
                return None
            return await deliver(ex, provider, call, resp)
        finally:
            await resp.aclose()


def prepare(provider: Provider, model: str, upstream_model: str, suffix: str, body: bytes,
            routing: Any) -> Call:
    """Translate the client's request for ``provider`` (a :class:`GatewayError` when it cannot be)."""
    cfg = provider.cfg
    strict = bool(cfg.strict_translation)
    if suffix in ("/chat/completions", "/responses"):
        request = bodies.decode_object(body)
        responses = None
        dropped: list[str] = []
        stream, include_usage = routing.stream, routing.include_usage
        if suffix == "/responses":
            responses = request
            try:
                request = responses_to_chat(request, dropped)
            except TranslationError as exc:
                raise _translation_error(exc) from None
            if strict and (refused := strict_refusal(dropped, f"{provider.type} ({provider.name})")) is not None:
                raise _translation_error(refused)
            stream, include_usage = bool(request.get("stream")), True
        module = _TRANSLATORS[provider.wire]
        try:
            # Strict: what the provider cannot honour is a 400, never dropped.
            path, headers, payload = module.build_request(
                request, upstream_model, default_max_tokens=cfg.default_max_tokens,
                drop_unsupported=cfg.drop_unsupported_params and not strict)
        except TranslationError as exc:
            raise _translation_error(exc) from None
        call = Call("chat", module, model, upstream_model, path, headers, payload)
        call.stream, call.include_usage, call.responses = stream, include_usage, responses
        call.dropped = dropped
        return call
    if suffix == "/embeddings":
        request = bodies.decode_object(body)
        if provider.wire != "gemini":
            raise bad_request(f"Provider '{provider.name}' ({provider.type}) has no embeddings endpoint.",
                              param="model", code="unsupported_endpoint")
        encoding = request.get("encoding_format") or "float"
        if encoding not in ("float", "base64"):
            raise bad_request("'encoding_format' must be 'float' or 'base64'.", param="encoding_format",
                              code="invalid_value")
        try:
            path, headers, payload = gemini.build_embeddings_request(request, upstream_model)
        except TranslationError as exc:
            raise _translation_error(exc) from None
        call = Call("embeddings", gemini, model, upstream_model, path, headers, payload)
        call.encoding = encoding
        return call
    if suffix == "/completions":
        raise bad_request(f"Legacy completions are not supported for provider '{provider.name}' "
                          f"({provider.type}); use /v1/chat/completions.", code="unsupported_endpoint")
    raise GatewayError(404, f"The endpoint {suffix} is not available for provider '{provider.name}'.",
                       code="unsupported_endpoint")


async def open_call(ex: Exchange, provider: Provider, call: Call, auth: list[tuple[bytes, bytes]] | None = None,
                    timeouts: Timeouts | None = None) -> UpstreamResponse:
    """Send the translated request; the answer's status and headers are back, nothing went to the client."""
    record_dropped(ex, call.dropped)
    return await _post(ex, provider, call.path, call.headers, call.payload, auth, timeouts)


async def error_answer(ex: Exchange, resp: UpstreamResponse,
                       call: Call) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    """A provider 4xx/5xx -> its translated status and envelope, rate-limit headers kept."""
    try:
        data = await resp.read(ERROR_BODY_LIMIT)
    except UpstreamError:
        data = b""
    ex.upstream_wait = resp.wait
    status, body = call.module.translate_error(resp.status, data)
    return status, body, relayed_headers(resp)


async def deliver(ex: Exchange, provider: Provider, call: Call, resp: UpstreamResponse) -> Usage | None:
    """Answer the client from an accepted (2xx) upstream response."""
    if call.kind == "embeddings":
        return await _embeddings_body(ex, provider, call, resp)
    if not call.stream:
        return await _chat_body(ex, provider, call, resp)
    if provider.wire == "gemini" and (resp.header(b"content-type") or b"").startswith(b"application/json"):
        translator = gemini.StreamTranslator(model=call.model, include_usage=call.include_usage,
                                             framing="json-array")
    else:
        translator = call.module.StreamTranslator(model=call.model, include_usage=call.include_usage)
    return await _chat_stream(ex, provider, resp, translator, call.responses, call.model)


async def _chat_body(ex: Exchange, provider: Provider, call: Call, resp: UpstreamResponse) -> Usage:
    """A non-streaming answer: read it whole, translate, respond once."""
    data = await _read(ex, provider, resp)
    try:
        out = call.module.translate_response(data, model=call.model)
        usage = call.module.response_usage(data)
        if call.responses is not None:
            out = chat_to_responses(out, model=call.model, request=call.responses)
    except (ValueError, TypeError, AttributeError, KeyError, msgspec.DecodeError):
        log.warning("request %s: provider %s sent a malformed %d body", ex.request_id, provider.name, resp.status)
        raise GatewayError(502, f"The upstream provider '{provider.name}' returned a malformed response.",
                           type="upstream_error", code="upstream_malformed") from None
    await ex.respond(resp.status, out, extra=relayed_headers(resp))
    return usage


async def _chat_stream(ex: Exchange, provider: Provider, resp: UpstreamResponse, translator: Any,
                       responses: dict[str, Any] | None, model: str) -> Usage:
    """Feed every upstream chunk to the translator(s); send each non-empty output at once."""
    rst = ResponsesStreamTranslator(model, request=responses) if responses is not None else None
    await ex.start(200, _SSE_HEADERS + relayed_headers(resp) + ex.gateway_headers())
    send = ex.send
    next_chunk = resp.next_chunk
    feed = translator.feed
    seen = ex.tap = StreamSeen(translator)
    try:
        while (chunk := await next_chunk()) is not None:
            if not ex.t_first:
                ex.t_first = perf_counter()
            out = feed(chunk)
            if out:
                if rst is not None:
                    out = rst.feed(out)
                if out:
                    seen.add(out)
                    await send({"type": "http.response.body", "body": out, "more_body": True})
            if translator.error is not None:
                break
        tail = translator.close()
        if rst is not None:
            tail = rst.feed(tail) + rst.close() if tail else rst.close()
    except UpstreamError as exc:
        tail = _midstream_failure(ex, provider, exc, rst)
    else:
        if translator.error is not None:
            err = translator.error
            log.warning("request %s: provider %s sent an error mid-stream: %s/%s", ex.request_id, provider.name,
                        err.get("type"), err.get("code"))
        elif not translator.complete:
            log.warning("request %s: provider %s ended the stream early", ex.request_id, provider.name)
    await send({"type": "http.response.body", "body": tail, "more_body": False})
    usage: Usage = translator.usage
    return usage


def _midstream_failure(ex: Exchange, provider: Provider, exc: UpstreamError,
                       rst: ResponsesStreamTranslator | None) -> bytes:
    """The one error event ending a stream whose upstream timed out or broke."""
    event = midstream_error_event(ex, provider, exc)
    return rst.feed(event) if rst is not None else event


# -- embeddings ----------------------------------------------------------------------------


async def _embeddings_body(ex: Exchange, provider: Provider, call: Call, resp: UpstreamResponse) -> Usage:
    data = await _read(ex, provider, resp)
    try:
        out = gemini.translate_embeddings_response(data, model=call.model, encoding_format=call.encoding)
        usage = gemini.response_usage(data)
    except (ValueError, TypeError, AttributeError, msgspec.DecodeError):
        raise GatewayError(502, f"The upstream provider '{provider.name}' returned a malformed response.",
                           type="upstream_error", code="upstream_malformed") from None
    await ex.respond(resp.status, out, extra=relayed_headers(resp))
    return usage


# -- shared --------------------------------------------------------------------------------


async def _post(ex: Exchange, provider: Provider, path: str, headers: dict[str, str],
                payload: bytes, auth: list[tuple[bytes, bytes]] | None = None,
                timeouts: Timeouts | None = None) -> UpstreamResponse:
    """POST ``payload`` to the provider (``path`` may carry a query, e.g. ``?alt=sse``)."""
    suffix, _, query = path.partition("?")
    out = [
        (b"host", provider.host_header),
        (b"content-length", str(len(payload)).encode()),
        (b"accept-encoding", b"identity"),
    ]
    out += [(k.encode(), v.encode()) for k, v in headers.items()]
    if not any(k.lower() == "content-type" for k in headers):
        out.append((b"content-type", b"application/json"))
    out += provider.auth_headers if auth is None else auth
    if provider.extra_headers:
        out += provider.extra_headers
    return await open_upstream(provider, b"POST", provider.target(suffix.encode(), query.encode()), out, payload,
                               ex, timeouts)


async def _read(ex: Exchange, provider: Provider, resp: UpstreamResponse) -> bytes:
    """A whole (non-streaming) body; the wait for it is the upstream's, not the gateway's."""
    try:
        data = await resp.read(BODY_LIMIT)
    except UpstreamError as exc:
        raise upstream_failure(exc, provider) from None
    ex.t_first = perf_counter()
    ex.upstream_wait = resp.wait
    return data



def _translation_error(exc: TranslationError) -> GatewayError:
    return GatewayError(exc.status, exc.message, type=exc.type, param=exc.param, code=exc.code)
