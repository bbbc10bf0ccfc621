"""The Messages door on a route: the attempt loop's steps for ``/v1/messages`` and ``count_tokens``.

:func:`serve_routed` serves a route with several targets, retries or rotating keys through
:func:`fastgw.routing.attempts.run`; :class:`MessagesDoor` gives the loop the door's steps,
built from :mod:`fastgw.egress.messages`: the byte relay to Anthropic deployments (each
deployment's body rewritten at most once), translation to OpenAI-compatible and Gemini ones,
the in-process mock, and the ``count_tokens`` estimate for providers without one. Every step
stops where the loop must decide: an upstream's status line and headers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastgw.controls.messages_usage import MessagesUsageTap
from fastgw.controls.usage import BodyTap, CaptureTap
from fastgw.egress.messages import (
    COUNT_TOKENS,
    MESSAGES,
    _anthropic_error_answer,
    _anthropic_headers,
    _estimate_tokens,
    _translated_body,
    _translated_call,
    _translated_error_answer,
    _translated_stream,
)
from fastgw.egress.relay import relay_body
from fastgw.exchange import Exchange
from fastgw.ingress import body as bodies
from fastgw.routing import attempts
from fastgw.routing.keys import ApiKey
from fastgw.routing.targets import Deployment, RoutePlan
from fastgw.upstream.call import open_upstream
from fastgw.upstream.client import Timeouts, UpstreamResponse

if TYPE_CHECKING:
    from fastgw.app import Gateway


async def serve_routed(gw: Gateway, ex: Exchange, body: bytes, stream: bool, plan: RoutePlan,
                       endpoint: bytes = MESSAGES) -> None:
    """Serve a route with several targets, retries or rotating keys through the attempt loop."""
    await attempts.run(ex, plan, body, MessagesDoor(gw, ex, body, stream, endpoint))


class _Relayed:
    __slots__ = ("body", "path_taken", "stream", "tap", "usage_path")


class MessagesDoor(attempts.Door):
    """The Messages door's steps: the byte relay to Anthropic, translation to the others."""

    __slots__ = ("body", "endpoint", "ex", "gw", "request", "stream")

    def __init__(self, gw: Gateway, ex: Exchange, body: bytes, stream: bool, endpoint: bytes) -> None:
        self.gw = gw
        self.ex = ex
        self.body = body
        self.stream = stream
        self.endpoint = endpoint
        self.request: dict[str, Any] | None = None

    def _object(self) -> dict[str, Any]:
        if self.request is None:
            self.request = bodies.decode_object(self.body)
        return self.request

    def local(self, dep: Deployment) -> bool:
        wire = dep.provider.wire
        return wire == "mock" or (self.endpoint == COUNT_TOKENS and wire != "anthropic")

    async def serve_local(self, dep: Deployment) -> None:
        ex = self.ex
        provider = dep.provider
        if self.endpoint == COUNT_TOKENS:
            await _estimate_tokens(ex, provider, self._object())
            return
        from fastgw.egress.messages_mock import serve

        ex.path_taken = ex.usage_path = "mock"
        await serve(ex, provider.cfg.mock, dep.model, self._object(), self.stream)

    def prepare(self, dep: Deployment) -> Any:
        provider = dep.provider
        if provider.wire != "anthropic":
            return None  # built in open(): the headers depend on the key
        out = _Relayed()
        out.body, out.path_taken = self.body, "fast"
        if dep.rewrite:
            new = bodies.rewrite(self.body, model_json=dep.upstream_model_json, rename_max_tokens=False)
            if new is not None:
                out.body, out.path_taken = new, "rewritten"
        controls = self.gw.controls
        out.stream = self.stream
        if self.endpoint == COUNT_TOKENS:
            out.tap, out.usage_path, out.stream = None, "", False
        elif self.stream:
            out.usage_path = "messages"
            out.tap = MessagesUsageTap()
            if controls.capture_bodies:
                out.tap = CaptureTap(out.tap, controls.config.logging.body_cap)
        else:
            out.usage_path, out.tap = "body", BodyTap()
        return out

    async def open(self, dep: Deployment, call: Any, key: ApiKey | None,
                   timeouts: Timeouts | None) -> UpstreamResponse:
        ex = self.ex
        provider = dep.provider
        fixed = key.json_request_headers if key is not None else None
        if call is not None:
            target = provider.target(self.endpoint, ex.scope.get("query_string") or b"")
            headers: Any = _anthropic_headers(provider, ex.scope, len(call.body), fixed)
            return await open_upstream(provider, b"POST", target, headers, call.body, ex, timeouts)
        target, headers, payload = _translated_call(ex, provider, dep, self._object(), fixed)
        return await open_upstream(provider, b"POST", target, headers, payload, ex, timeouts)

    async def error_answer(self, dep: Deployment, call: Any,
                           resp: UpstreamResponse) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        if call is not None:
            return await _anthropic_error_answer(resp, dep.provider)
        return await _translated_error_answer(self.ex, resp, dep.provider)

    async def deliver(self, dep: Deployment, call: Any, resp: UpstreamResponse) -> None:
        ex = self.ex
        provider = dep.provider
        if call is not None:
            ex.path_taken, ex.usage_path, ex.tap = call.path_taken, call.usage_path, call.tap
            await relay_body(ex, resp, provider, stream=call.stream, tap=call.tap)
            return
        ex.path_taken = ex.usage_path = "translated"
        ex.usage = (await _translated_stream(ex, provider, dep, resp) if self.stream
                    else await _translated_body(ex, provider, dep, resp))
