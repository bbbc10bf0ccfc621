"""Egress for the Anthropic Messages front door (``/v1/messages``), by the provider's wire format.

:func:`dispatch` serves one admitted request whose route is known:

* an Anthropic provider -- the byte relay (:func:`fastgw.egress.relay.relay`): the
  client's body goes upstream unchanged (a renamed or aliased model rewrites only the
  ``model`` member, :func:`fastgw.ingress.body.rewrite`) with the provider's credentials,
  the client's ``anthropic-version`` / ``anthropic-beta`` headers and its query string
  (``?beta=true``); the answer comes back byte for byte. Usage: a stream's through
  :class:`~fastgw.controls.messages_usage.MessagesUsageTap`, a JSON body's from its
  ``usage`` member only. An upstream error body is relayed as it is when it is Anthropic's
  envelope (else wrapped in it).
* an OpenAI-compatible provider -- :func:`fastgw.translate.messages_request.to_chat`, POST to
  ``/chat/completions``, and back through :func:`fastgw.translate.messages.chat_to_message`
  or :class:`fastgw.translate.messages_stream.MessagesStream`.
* a Gemini provider -- chained: Messages -> chat -> :func:`fastgw.translate.gemini.build_request`,
  and Gemini's answer -> chat (:mod:`fastgw.translate.gemini`) -> Messages.
* the built-in mock -- a short Anthropic-shaped answer.

What a translation drops (fields that only steer Anthropic's machinery) is counted
(``fastgw_dropped_params_total``) and named in the ``x-fastgw-dropped-params`` header
(:func:`record_dropped`); with the provider's ``strict_translation`` the request is refused
instead, naming them all (:mod:`fastgw.translate.strict`). ``count_tokens`` goes to an Anthropic provider as it is; for other
providers it is estimated from the translated request's size (about 4 bytes a token).

Errors before the answer starts are raised as :class:`~fastgw.errors.GatewayError` (the door
renders them in Anthropic's envelope); a failure mid-stream ends the stream with one
``event: error``.
"""

from __future__ import annotations

import logging
import re
from time import perf_counter
from typing import TYPE_CHECKING, Any

import msgspec
from h11._headers import Headers

from fastgw.controls import metrics
from fastgw.controls.messages_usage import MessagesUsageTap
from fastgw.controls.usage import BodyTap, CaptureTap
from fastgw.egress.relay import relay
from fastgw.errors import GatewayError
from fastgw.exchange import Exchange, header
from fastgw.ingress import body as bodies
from fastgw.routing.providers import Provider
from fastgw.routing.router import Route
from fastgw.routing.targets import Deployment
from fastgw.tokens import Usage
from fastgw.translate import gemini
from fastgw.translate.errors import TranslationError
from fastgw.translate.messages import chat_to_message, from_openai_error
from fastgw.translate.messages_request import DROPPED_ALWAYS, to_chat
from fastgw.translate.messages_stream import MessagesStream
from fastgw.translate.strict import refusal as strict_refusal
from fastgw.upstream.call import (
    ERROR_BODY_LIMIT,
    midstream_error_event,
    open_upstream,
    relayed_headers,
    upstream_failure,
    upstream_headers,
)
from fastgw.upstream.call import error_body as openai_error_body
from fastgw.upstream.client import UpstreamError, UpstreamResponse
from fastgw.upstream.connection import HeaderItems, with_content_length
from fastgw.upstream.watch import watch_client

if TYPE_CHECKING:
    from fastgw.app import Gateway

__all__ = ["COUNT_TOKENS", "MESSAGES", "dispatch", "record_dropped"]

log = logging.getLogger("fastgw.egress.messages")

MESSAGES = b"/v1/messages"
COUNT_TOKENS = b"/v1/messages/count_tokens"
DEFAULT_VERSION = b"2023-06-01"
BODY_LIMIT = 64 * 1024 * 1024
_SSE_HEADERS = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache")]
_encode = msgspec.json.Encoder().encode
# Metric labels stay bounded: known names, dated tool types, else "other".
_KNOWN_DROPS = frozenset(DROPPED_ALWAYS) | {"thinking", "output_config.effort", "top_k",
                                            "include", "prompt_cache_key", "client_metadata", "web_search"}
_TOOL_TYPE = re.compile(r"^[a-z_]{1,40}_\d{8}$")


def record_dropped(ex: Exchange, names: list[str]) -> None:
    """Name dropped request fields in the response header and count them."""
    if not names:
        return
    ex.dropped = (ex.dropped or []) + [n for n in names if n not in (ex.dropped or ())]
    for name in names:
        metrics.observe_dropped(name if name in _KNOWN_DROPS or _TOOL_TYPE.match(name) else "other")


async def dispatch(gw: Gateway, ex: Exchange, body: bytes, stream: bool, route: Route,
                   endpoint: bytes = MESSAGES) -> None:
    """Serve ``/v1/messages`` (or ``count_tokens``) for ``route``; see the module docstring."""
    provider = route.provider
    wire = provider.wire
    if wire == "anthropic":
        await _relay(gw, ex, provider, route, body, stream, endpoint)
        return
    request = bodies.decode_object(body)
    if endpoint == COUNT_TOKENS:
        await _estimate_tokens(ex, provider, request)
        return
    if wire == "mock":
        from fastgw.egress.messages_mock import serve

        ex.path_taken = ex.usage_path = "mock"
        await serve(ex, provider.cfg.mock, route.model, request, stream)
        return
    ex.path_taken = "translated"
    ex.usage_path = "translated"
    ex.usage = await _translated(ex, provider, route, request, stream)


# -- Anthropic: the byte relay -----------------------------------------------------------------


def _anthropic_headers(provider: Provider, scope: dict[str, Any], length: int,
                       fixed: HeaderItems | None = None) -> Headers | list[tuple[bytes, bytes]]:
    """``fixed``: a rotated key's request headers instead of the provider's."""
    version = header(scope, b"anthropic-version") or DEFAULT_VERSION
    beta = header(scope, b"anthropic-beta")
    if provider.forward_client_key:
        client_key = header(scope, b"x-api-key")
        if client_key:
            out = [(b"host", provider.host_header), (b"content-type", b"application/json"),
                   (b"content-length", str(length).encode()), (b"accept-encoding", b"identity"),
                   (b"x-api-key", client_key), *provider.extra_headers]
        else:
            out = list(upstream_headers(provider, length, header(scope, b"authorization")))
        out.append((b"anthropic-version", version))
        if beta:
            out.append((b"anthropic-beta", beta))
        return out
    items = [*(provider.json_request_headers if fixed is None else fixed),
             (b"anthropic-version", b"anthropic-version", version)]
    if beta:
        items.append((b"anthropic-beta", b"anthropic-beta", beta))
    items.append((b"content-length", b"content-length", str(length).encode()))
    return Headers(items)


async def _relay(gw: Gateway, ex: Exchange, provider: Provider, route: Route, body: bytes, stream: bool,
                 endpoint: bytes) -> None:
    path_taken = "fast"
    if route.rewrite:
        new = bodies.rewrite(body, model_json=route.upstream_model_json, rename_max_tokens=False)
        if new is not None:
            body = new
            path_taken = "rewritten"
    ex.path_taken = path_taken
    controls = gw.controls
    tap: Any
    if endpoint == COUNT_TOKENS:
        tap = None
        stream = False
    elif stream:
        ex.usage_path = "messages"
        tap = MessagesUsageTap()
        if controls.capture_bodies:
            tap = CaptureTap(tap, controls.config.logging.body_cap)
    else:
        ex.usage_path = "body"
        tap = BodyTap()
    ex.tap = tap
    target = provider.target(endpoint, ex.scope.get("query_string") or b"")
    headers = _anthropic_headers(provider, ex.scope, len(body))
    await relay(ex, provider, target, body, stream=stream, tap=tap, headers=headers, on_error=_relay_error)


class _ErrorShape(msgspec.Struct):
    type: Any = None
    error: Any = None


_decode_error = msgspec.json.Decoder(_ErrorShape).decode


async def _relay_error(ex: Exchange, resp: UpstreamResponse, provider: Provider) -> None:
    """An Anthropic 4xx/5xx: kept when it is Anthropic's envelope (key redacted), else wrapped."""
    status, data, extra = await _anthropic_error_answer(resp, provider)
    await ex.respond(status, data, extra=extra)


async def _anthropic_error_answer(resp: UpstreamResponse,
                                  provider: Provider) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    try:
        data = await resp.read(ERROR_BODY_LIMIT)
    except UpstreamError:
        data = b""
    for key in provider.secrets:  # api_key, or every rotated api_keys entry
        if key.encode() in data:
            data = data.replace(key.encode(), b"[REDACTED]")
    status = resp.status
    try:
        shape = _decode_error(data)
        ok = shape.type == "error" and isinstance(shape.error, dict) and "type" in shape.error
    except msgspec.DecodeError:
        ok = False
    if not ok:
        status, data = from_openai_error(status, openai_error_body(status, data, provider))
    return status, data, relayed_headers(resp)


# -- OpenAI-compatible and Gemini: translated --------------------------------------------------


def _reasoning_model(provider: Provider, upstream_model: str) -> bool:
    """Whether a chat request for this model may carry ``reasoning_effort``."""
    if provider.wire == "gemini":
        return True
    return bodies.needs_max_completion_tokens(provider.type, upstream_model) or provider.type not in (
        "openai", "azure", "groq", "mistral", "together", "fireworks")


async def _translated(ex: Exchange, provider: Provider, route: Route, request: dict[str, Any],
                      stream: bool) -> Usage | None:
    target, headers, payload = _translated_call(ex, provider, route, request)
    async with watch_client(ex):
        resp = await open_upstream(provider, b"POST", target, headers, payload, ex)
        try:
            if resp.status >= 400:
                await _translated_error(ex, resp, provider)
                return None
            if not stream:
                return await _translated_body(ex, provider, route, resp)
            return await _translated_stream(ex, provider, route, resp)
        finally:
            await resp.aclose()


def _translated_call(ex: Exchange, provider: Provider, route: Route | Deployment, request: dict[str, Any],
                     fixed: HeaderItems | None = None) -> tuple[bytes, Any, bytes]:
    """(target, headers, payload) of the chat (or Gemini) request for a Messages request."""
    wire = provider.wire
    cfg = provider.cfg
    strict = bool(cfg.strict_translation)
    try:
        # Strict: collect every unsupported field (drop_unsupported) to refuse them all at once.
        chat, dropped = to_chat(request, target=wire, drop_unsupported=strict or cfg.drop_unsupported_params,
                                reasoning=_reasoning_model(provider, route.upstream_model))
        if strict and (refused := strict_refusal(dropped, f"{provider.type} ({provider.name})")) is not None:
            raise refused
        record_dropped(ex, dropped)
        if wire == "gemini":
            path, extra, payload = gemini.build_request(chat, route.upstream_model,
                                                        default_max_tokens=cfg.default_max_tokens,
                                                        drop_unsupported=cfg.drop_unsupported_params and not strict)
            target = provider.target(*[p.encode() for p in path.partition("?")[::2]])
        else:
            chat = {"model": route.upstream_model, **chat}
            if bodies.needs_max_completion_tokens(provider.type, route.upstream_model):
                chat["max_completion_tokens"] = chat.pop("max_tokens")
            payload = _encode(chat)
            target = provider.target_for("/chat/completions")
            extra = {}
    except TranslationError as exc:
        raise GatewayError(exc.status, exc.message, type=exc.type, param=exc.param, code=exc.code) from None
    headers: Any = (upstream_headers(provider, len(payload), None) if fixed is None
                    else with_content_length(fixed, len(payload)))
    if extra:
        headers = [*headers, *((k.encode(), v.encode()) for k, v in extra.items() if k != "content-type")]
    return target, headers, payload


async def _translated_error(ex: Exchange, resp: UpstreamResponse, provider: Provider) -> None:
    status, body, extra = await _translated_error_answer(ex, resp, provider)
    await ex.respond(status, body, extra=extra)


async def _translated_error_answer(ex: Exchange, resp: UpstreamResponse,
                                   provider: Provider) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    try:
        data = await resp.read(ERROR_BODY_LIMIT)
    except UpstreamError:
        data = b""
    ex.upstream_wait = resp.wait
    if provider.wire == "gemini":
        status, envelope = gemini.translate_error(resp.status, data)
    else:
        status, envelope = resp.status, openai_error_body(resp.status, data, provider)
    status, body = from_openai_error(status, envelope)
    return status, body, relayed_headers(resp)


async def _translated_body(ex: Exchange, provider: Provider, route: Route | Deployment,
                           resp: UpstreamResponse) -> Usage:
    try:
        data = await resp.read(BODY_LIMIT)
    except UpstreamError as exc:
        raise upstream_failure(exc, provider) from None
    ex.t_first = perf_counter()
    ex.upstream_wait = resp.wait
    try:
        if provider.wire == "gemini":
            data = gemini.translate_response(data, model=route.model)
        out, usage = chat_to_message(data, model=route.model)
    except (ValueError, TypeError, AttributeError, KeyError, IndexError, msgspec.DecodeError):
        log.warning("request %s: provider %s sent a malformed %d body", ex.request_id, provider.name, resp.status)
        raise GatewayError(502, f"The upstream provider '{provider.name}' returned a malformed response.",
                           type="upstream_error", code="upstream_malformed") from None
    await ex.respond(resp.status, out, extra=relayed_headers(resp))
    return usage


async def _translated_stream(ex: Exchange, provider: Provider, route: Route | Deployment,
                             resp: UpstreamResponse) -> Usage:
    first: Any = None
    if provider.wire == "gemini":
        json_array = (resp.header(b"content-type") or b"").startswith(b"application/json")
        first = gemini.StreamTranslator(model=route.model, include_usage=True,
                                        framing="json-array" if json_array else "sse")
    translator = MessagesStream(model=route.model)
    await ex.start(200, _SSE_HEADERS + relayed_headers(resp) + ex.gateway_headers())
    send = ex.send
    next_chunk = resp.next_chunk
    feed = translator.feed
    try:
        while (chunk := await next_chunk()) is not None:
            if not ex.t_first:
                ex.t_first = perf_counter()
            out = feed(first.feed(chunk) if first is not None else chunk)
            if out:
                await send({"type": "http.response.body", "body": out, "more_body": True})
            if translator.finished:
                break
        tail = feed(first.close()) if first is not None else b""
        tail += translator.close()
    except UpstreamError as exc:
        tail = midstream_error_event(ex, provider, exc)
    if translator.error is not None:
        ex.error_type = "upstream_error"
        log.warning("request %s: provider %s sent an error mid-stream", ex.request_id, provider.name)
    await send({"type": "http.response.body", "body": tail, "more_body": False})
    usage = translator.usage
    if first is not None and not usage.total_tokens:
        usage = first.usage
    return usage


async def _estimate_tokens(ex: Exchange, provider: Provider, request: dict[str, Any]) -> None:
    """``count_tokens`` for a provider without one: an estimate from the translated request."""
    request = {**request, "max_tokens": request.get("max_tokens") or 1}
    try:
        chat, _ = to_chat(request, target=provider.wire if provider.wire == "gemini" else "openai",
                          drop_unsupported=True)
    except TranslationError as exc:
        raise GatewayError(exc.status, exc.message, type=exc.type, param=exc.param, code=exc.code) from None
    size = len(_encode(chat.get("messages"))) + len(_encode(chat.get("tools") or []))
    ex.path_taken = "translated"
    await ex.respond(200, _encode({"input_tokens": max(1, size // 4)}))


# -- shared ------------------------------------------------------------------------------------



