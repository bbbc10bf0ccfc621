"""The Anthropic front door: ``POST /v1/messages``, ``POST /v1/messages/count_tokens``, and the
Anthropic shape of the model list.

A request to ``/v1/messages`` (``?beta=true`` and other query strings included: the path is
what routes):

1. :func:`fastgw.ingress.body.read_body` -- the body, within the size limit;
2. :func:`fastgw.ingress.body.decode_routing` -- only ``model`` and ``stream``;
3. :meth:`fastgw.routing.router.Router.resolve` -- provider and upstream model name;
4. the virtual key (if one was presented, as ``x-api-key`` or ``Authorization: Bearer``) is
   checked against the model -- as on the OpenAI door: the same keys, model restrictions,
   budgets, usage, request log and metrics (the endpoints are admitted and accounted);
5. :func:`fastgw.egress.messages.dispatch` -- the byte relay to an Anthropic provider, the
   translation to every other.

Every error is Anthropic's envelope ``{"type":"error","error":{"type","message"}}`` with the
status Anthropic uses (:class:`AnthropicErrors`), mid-stream failures one ``event: error``.

``GET /v1/models`` and ``GET /v1/models/{id}`` (served by :mod:`fastgw.ingress.openai`) answer
with :func:`model_bodies`' Anthropic shape when the request carries ``anthropic-version``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from fastgw.controls import metrics
from fastgw.egress import messages as egress
from fastgw.egress.messages_routed import serve_routed
from fastgw.errors import ErrorFormat, GatewayError
from fastgw.exchange import Exchange
from fastgw.ingress import body as bodies
from fastgw.ingress.shared import route_and_admit
from fastgw.routes import Endpoint, RouteTable
from fastgw.translate.messages import error_body, error_event, error_type

if TYPE_CHECKING:
    from fastgw.app import Gateway

__all__ = ["ANTHROPIC_ERRORS", "AnthropicErrors", "model_bodies", "register"]

_POST = frozenset({"POST"})
_encode = msgspec.json.Encoder().encode
CREATED_AT = "2024-01-01T00:00:00Z"


class AnthropicErrors(ErrorFormat):
    """Errors in Anthropic's envelope, with Anthropic's statuses (529 for overloaded)."""

    def render(self, exc: GatewayError) -> tuple[int, bytes]:
        status, kind = error_type(exc.status, exc.type)
        return status, error_body(kind, exc.message)

    def event(self, message: str, type: str, code: str | None = None) -> bytes:
        return error_event(error_type(500, type)[1], message)


ANTHROPIC_ERRORS = AnthropicErrors()


def register(table: RouteTable) -> None:
    table.add("/v1/messages", Endpoint(messages, _POST, admitted=True, errors=ANTHROPIC_ERRORS))
    table.add("/v1/messages/count_tokens", Endpoint(count_tokens, _POST, admitted=True, errors=ANTHROPIC_ERRORS))


async def messages(gw: Gateway, ex: Exchange, token: str | None) -> None:
    await _serve(gw, ex, token, egress.MESSAGES)


async def count_tokens(gw: Gateway, ex: Exchange, token: str | None) -> None:
    await _serve(gw, ex, token, egress.COUNT_TOKENS)


async def _serve(gw: Gateway, ex: Exchange, token: str | None, endpoint: bytes) -> None:
    body = await bodies.read_admitted_body(ex, gw.max_body, gw.config.server.body_timeout)
    routing = bodies.decode_routing(body)
    stream = routing.stream and endpoint == egress.MESSAGES
    ex.model = routing.model
    ex.stream = stream
    route = await route_and_admit(gw, ex, routing, body, token)
    if stream:
        metrics.stream_started()
    try:
        if route.plan is None:
            await egress.dispatch(gw, ex, body, stream, route, endpoint)
        else:
            await serve_routed(gw, ex, body, stream, route.plan, endpoint)
    finally:
        if stream:
            metrics.stream_ended()


def model_bodies(models: list[tuple[str, str]]) -> tuple[bytes, dict[str, bytes]]:
    """Anthropic's model list body and each model's body, for ``(id, owner)`` pairs."""
    data = [{"type": "model", "id": mid, "display_name": mid, "created_at": CREATED_AT} for mid, _ in models]
    listing = {"data": data, "has_more": False, "first_id": data[0]["id"] if data else None,
               "last_id": data[-1]["id"] if data else None}
    return _encode(listing), {d["id"]: _encode(d) for d in data}
