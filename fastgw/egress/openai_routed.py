"""The OpenAI door on a route: the attempt loop's steps for the OpenAI model endpoints.

:func:`serve_routed` serves a route with several targets, retries or rotating keys through
:func:`fastgw.routing.attempts.run`; :class:`OpenAIDoor` gives the loop the door's steps for
one deployment, each stopping where the loop must decide:

* ``prepare``: the deployment's request, made at most once per request and deployment: the
  client's bytes as they are (fast path) or rewritten (:func:`fastgw.egress.prepare.prepare`)
  for an OpenAI-compatible upstream, a translated call (:mod:`fastgw.egress.translated`) for
  the others;
* ``open``: sends it and returns at the upstream's status line and headers (nothing has
  reached the client yet);
* ``error_answer``: an upstream 4xx/5xx as the client's (status, body, headers), not sent;
* ``deliver``: answers the client from an accepted response, byte for byte on the relay;
* ``serve_local``: the in-process mock.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastgw.egress import mock, relay, translated
from fastgw.egress.prepare import prepare
from fastgw.exchange import Exchange, header
from fastgw.routing import attempts
from fastgw.routing.keys import ApiKey
from fastgw.routing.targets import Deployment, RoutePlan
from fastgw.upstream.client import Timeouts, UpstreamResponse

if TYPE_CHECKING:
    from fastgw.app import Gateway
    from fastgw.ingress.body import Routing


async def serve_routed(gw: Gateway, ex: Exchange, suffix: str, body: bytes, routing: Routing,
                       plan: RoutePlan) -> None:
    """Serve one OpenAI-door request on ``plan`` through the attempt loop."""
    await attempts.run(ex, plan, body, OpenAIDoor(gw, ex, suffix, body, routing))


class OpenAIDoor(attempts.Door):
    """The OpenAI door's steps: byte relay, translated providers, the mock."""

    __slots__ = ("body", "client_auth", "ex", "gw", "routing", "suffix")

    def __init__(self, gw: Gateway, ex: Exchange, suffix: str, body: bytes, routing: Routing) -> None:
        self.gw = gw
        self.ex = ex
        self.suffix = suffix
        self.body = body
        self.routing = routing
        self.client_auth = header(ex.scope, b"authorization")

    async def serve_local(self, dep: Deployment) -> None:
        ex = self.ex
        ex.path_taken = ex.usage_path = "mock"
        await mock.serve(ex, dep.provider.cfg.mock, self.suffix, dep.upstream_model, self.body,
                         self.routing.stream, self.routing.include_usage)

    def prepare(self, dep: Deployment) -> Any:
        provider = dep.provider
        if provider.wire == "openai":
            return prepare(self.gw.controls, self.suffix, self.body, self.routing, provider, dep.upstream_model,
                           dep.upstream_model_json if dep.rewrite else None)
        return translated.prepare(provider, self.ex.model, dep.upstream_model, self.suffix, self.body,
                                  self.routing)

    async def open(self, dep: Deployment, call: Any, key: ApiKey | None,
                   timeouts: Timeouts | None) -> UpstreamResponse:
        provider = dep.provider
        if provider.wire == "openai":
            return await relay.open_relay(self.ex, provider, provider.target_for(self.suffix), call.body,
                                          self.client_auth, key.json_request_headers if key is not None else None,
                                          timeouts)
        return await translated.open_call(self.ex, provider, call, key.auth_headers if key is not None else None,
                                          timeouts)

    async def error_answer(self, dep: Deployment, call: Any,
                           resp: UpstreamResponse) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        if dep.provider.wire == "openai":
            return await relay.error_answer(resp, dep.provider)
        return await translated.error_answer(self.ex, resp, call)

    async def deliver(self, dep: Deployment, call: Any, resp: UpstreamResponse) -> None:
        ex = self.ex
        provider = dep.provider
        if provider.wire == "openai":
            ex.path_taken = call.path_taken
            ex.usage_path = call.usage_path
            ex.tap = call.tap
            await relay.relay_body(ex, resp, provider, stream=self.routing.stream, tap=call.tap)
            return
        ex.path_taken = ex.usage_path = "translated"
        ex.usage = await translated.deliver(ex, provider, call, resp)
