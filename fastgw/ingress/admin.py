"""The admin door: ``/admin/...`` for the master key only, served by :mod:`fastgw.controls.admin`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastgw.controls import admin
from fastgw.exchange import Exchange
from fastgw.ingress.body import read_body
from fastgw.routes import Endpoint, RouteTable

if TYPE_CHECKING:
    from fastgw.app import Gateway


def register(table: RouteTable) -> None:
    endpoint = Endpoint(admin_api)
    table.add("/admin", endpoint)
    table.add("/admin/", endpoint)


async def admin_api(gw: Gateway, ex: Exchange, token: str | None) -> None:
    scope = ex.scope
    gw.auth.require_master(scope)
    body = await read_body(scope, ex.receive, gw.max_body)
    controls = gw.controls
    assert controls.keys is not None and controls.store is not None
    ctx = admin.AdminContext(controls.keys, controls.store, controls.logger)
    query = scope.get("query_string", b"").decode("latin-1")
    status, payload = await admin.handle(scope["method"], scope["path"], query, body, ctx)
    await ex.respond(status, payload)
