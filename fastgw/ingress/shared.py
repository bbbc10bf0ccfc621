"""The steps every front door's model endpoint shares: route the model, check the key, admit."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastgw.errors import GatewayError
from fastgw.exchange import Exchange
from fastgw.ingress.body import Routing
from fastgw.routing.router import Route

if TYPE_CHECKING:
    from fastgw.app import Gateway


async def route_and_admit(gw: Gateway, ex: Exchange, routing: Routing, body: bytes, token: str | None) -> Route:
    """Resolve the requested model, record the target on the exchange, check the virtual key (if
    one was presented) against it, then apply limits and budgets. Raises the refusal as a GatewayError."""
    model = routing.model
    route = gw.router.resolve(model)
    provider = route.provider
    ex.provider = provider.name
    ex.provider_type = provider.type
    ex.upstream_model = route.upstream_model
    controls = gw.controls
    if token is not None:
        try:
            ex.key = await controls.check_key(token, model, f"{provider.name}/{route.upstream_model}")
        except GatewayError:
            # Refused (model, budget, expiry): still attribute the record to the key.
            ex.key = controls.keys.lookup_cached(token) if controls.keys is not None else None
            raise
    await controls.admit(ex, body, routing.fields)
    if controls.capture_bodies:
        ex.body = body
    return route
