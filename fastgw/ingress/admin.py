"""The admin door: ``/admin/...`` for the master key only, served by :mod:`fastgw.controls.admin`."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import msgspec

from fastgw.controls import admin
from fastgw.exchange import Exchange
from fastgw.ingress.body import read_body
from fastgw.routes import Endpoint, RouteTable
from fastgw.routing.stats import routes_state

if TYPE_CHECKING:
    from fastgw.app import Gateway

_encode = msgspec.json.Encoder().encode


def register(table: RouteTable) -> None:
    endpoint = Endpoint(admin_api)
    table.add("/admin", endpoint)
    table.add("/admin/", endpoint)


async def admin_api(gw: Gateway, ex: Exchange, token: str | None) -> None:
    scope = ex.scope
    gw.auth.require_master(scope)
    body = await read_body(scope, ex.receive, gw.max_body, gw.config.server.body_timeout)
    if scope["path"] == "/admin/routes":
        # Routes with their deployments' breakers, load and latency; rotated keys per provider.
        now = asyncio.get_running_loop().time()
        keys = {p.name: p.keys.state(now) for p in gw.providers if p.keys is not None}
        await ex.respond(200, _encode({"routes": routes_state(gw.router.plans, now), "keys": keys}))
        return
    controls = gw.controls
    assert controls.keys is not None and controls.store is not None
    ctx = admin.AdminContext(controls.keys, controls.store, controls.logger)
    query = scope.get("query_string", b"").decode("latin-1")
    status, payload = await admin.handle(scope["method"], scope["path"], query, body, ctx)
    await ex.respond(status, payload)
