"""Operations endpoints: liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from fastgw.controls import metrics
from fastgw.exchange import Exchange
from fastgw.routes import Endpoint, RouteTable

if TYPE_CHECKING:
    from fastgw.app import Gateway

_encode = msgspec.json.Encoder().encode
_METRICS_TYPE = b"text/plain; version=0.0.4; charset=utf-8"


def register(table: RouteTable) -> None:
    table.add("/health", Endpoint(health))
    table.add("/ready", Endpoint(ready))
    table.add("/metrics", Endpoint(prometheus, frozenset({"GET"})))


async def health(gw: Gateway, ex: Exchange, token: str | None) -> None:
    await ex.respond(200, b'{"status":"ok"}')


async def ready(gw: Gateway, ex: Exchange, token: str | None) -> None:
    ok = gw.ready and not gw.draining
    body = b'{"status":"ready"}' if ok else b'{"status":"not ready"}'
    plans = gw.router.plans
    if plans:
        # Each route's circuit breakers: {"route": {"provider/model": "closed|half_open|open"}}.
        routes = {name: {d.name: d.breaker.state_name for d in plan.deployments} for name, plan in plans.items()}
        body = body[:-1] + b',"routes":' + _encode(routes) + b"}"
    await ex.respond(200 if ok else 503, body)


async def prometheus(gw: Gateway, ex: Exchange, token: str | None) -> None:
    await ex.respond(200, await metrics.render_metrics(gw.controls.metrics_dir), content_type=_METRICS_TYPE)
