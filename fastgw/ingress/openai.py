"""The OpenAI front door: chat completions, completions, embeddings, Responses, models.

``POST /v1/chat/completions`` (and the other model endpoints):

1. :func:`fastgw.ingress.body.read_body` -- the body, within the size limit;
2. :func:`fastgw.ingress.body.decode_routing` -- only ``model``/``stream``/``stream_options``;
3. :meth:`fastgw.routing.router.Router.resolve` -- provider and upstream model name;
4. the virtual key (if one was presented) is checked against the model;
5. a route with several targets, retries or rotating keys goes through the attempt
   loop (:func:`fastgw.egress.openai_routed.serve_routed`); a plain one straight to egress
   by the provider's wire format: :mod:`fastgw.egress.relay` relays bytes
   to an OpenAI-compatible upstream (after :func:`fastgw.ingress.body.rewrite`
   when the model name or a parameter must change), :mod:`fastgw.egress.translated`
   goes through :mod:`fastgw.translate`, :mod:`fastgw.egress.mock` answers in-process.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastgw.controls import metrics
from fastgw.egress import mock, openai_routed, relay
from fastgw.egress.prepare import prepare
from fastgw.errors import GatewayError
from fastgw.exchange import Exchange, header
from fastgw.ingress import body as bodies
from fastgw.ingress.shared import route_and_admit
from fastgw.routes import Endpoint, Handler, RouteTable
from fastgw.routing.router import Route

if TYPE_CHECKING:
    from fastgw.app import Gateway

# Model endpoints: client path -> the suffix under an OpenAI-compatible base URL.
MODEL_ENDPOINTS = {
    "/v1/chat/completions": "/chat/completions",
    "/v1/completions": "/completions",
    "/v1/embeddings": "/embeddings",
    "/v1/responses": "/responses",
}
STREAMING_ENDPOINTS = frozenset({"/chat/completions", "/completions", "/responses"})
_POST = frozenset({"POST"})
_GET = frozenset({"GET"})


def register(table: RouteTable) -> None:
    for path, suffix in MODEL_ENDPOINTS.items():
        table.add(path, Endpoint(_model_handler(suffix), _POST, admitted=True))
    table.add("/v1/models", Endpoint(list_models, _GET))
    table.add("/v1/models/", Endpoint(model_detail, _GET))


def _model_handler(suffix: str) -> Handler:
    async def handler(gw: Gateway, ex: Exchange, token: str | None) -> None:
        await model_endpoint(gw, ex, suffix, token)

    return handler


def _anthropic_client(ex: Exchange) -> bool:
    """Anthropic's SDK and agents send anthropic-version: they get Anthropic's list shape and errors."""
    if header(ex.scope, b"anthropic-version") is None:
        return False
    from fastgw.ingress.anthropic import ANTHROPIC_ERRORS

    ex.errors = ANTHROPIC_ERRORS
    return True


async def list_models(gw: Gateway, ex: Exchange, token: str | None) -> None:
    anthropic = _anthropic_client(ex)
    await gw.check_any_key(gw.auth.authorize(ex.scope))
    await ex.respond(200, gw.anthropic_models_body if anthropic else gw.models_body)


async def model_detail(gw: Gateway, ex: Exchange, token: str | None) -> None:
    anthropic = _anthropic_client(ex)
    await gw.check_any_key(gw.auth.authorize(ex.scope))
    model_id = ex.scope["path"][len("/v1/models/"):]
    body = (gw.anthropic_models_by_id if anthropic else gw.models_by_id).get(model_id)
    if body is None:
        raise GatewayError(404, f"The model '{model_id}' does not exist. See GET /v1/models.",
                           type="invalid_request_error", param="model", code="model_not_found")
    await ex.respond(200, body)


async def model_endpoint(gw: Gateway, ex: Exchange, suffix: str, token: str | None = None) -> None:
    body = await bodies.read_admitted_body(ex, gw.max_body, gw.config.server.body_timeout)
    routing = bodies.decode_routing(body)
    stream = routing.stream
    if stream and suffix not in STREAMING_ENDPOINTS:
        raise bodies.bad_request(f"Streaming is not supported on {suffix[1:]}.", param="stream")
    ex.model = routing.model
    ex.stream = stream
    route = await route_and_admit(gw, ex, routing, body, token)
    if stream:
        metrics.stream_started()
    cache = gw.controls.cache
    cached = (cache.route_for(suffix, routing.model, f"{route.provider.name}/{route.upstream_model}")
              if cache else None)
    try:
        if cached is None:
            await forward(gw, ex, suffix, body, routing, route)
        else:
            await cache.serve(ex, suffix, cached, body, routing.include_usage, route,
                              lambda: forward(gw, ex, suffix, body, routing, route))
    finally:
        if stream:
            metrics.stream_ended()


async def forward(gw: Gateway, ex: Exchange, suffix: str, body: bytes, routing: bodies.Routing,
                  route: Route) -> None:
    """One target, or the route's attempt loop (retries, fallbacks, balancing)."""
    if route.plan is None:
        await dispatch(gw, ex, suffix, body, routing, route)
    else:
        await openai_routed.serve_routed(gw, ex, suffix, body, routing, route.plan)


async def dispatch(gw: Gateway, ex: Exchange, suffix: str, body: bytes, routing: bodies.Routing,
                   route: Route) -> None:
    """Egress by the provider's wire format."""
    provider = route.provider
    stream = routing.stream
    if provider.wire == "mock":
        ex.path_taken = "mock"
        ex.usage_path = "mock"
        await mock.serve(ex, provider.cfg.mock, suffix, route.upstream_model, body, stream,
                         routing.include_usage)
        return
    if provider.wire != "openai":
        from fastgw.egress import translated

        ex.path_taken = "translated"
        ex.usage_path = "translated"
        ex.usage = await translated.handle(ex, provider, route, suffix, body, routing)
        return
    p = prepare(gw.controls, suffix, body, routing, provider, route.upstream_model,
                route.upstream_model_json if route.rewrite else None)
    ex.path_taken = p.path_taken
    ex.usage_path = p.usage_path
    ex.tap = p.tap
    await relay.relay(ex, provider, provider.target_for(suffix), p.body, stream=stream,
                      client_auth=header(ex.scope, b"authorization"), tap=p.tap)
