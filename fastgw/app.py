"""The ASGI application: lifecycle, the route table, and errors as envelopes.

A request's journey, module by module:

1. ingress (:mod:`fastgw.ingress`): which API the client speaks -- the route
   table (:mod:`fastgw.routes`) picks the front door's handler by path;
2. authorize and admit (:mod:`fastgw.admission`): the gateway's credentials,
   then the worker's in-flight bound (503 at once past it);
3. route (:mod:`fastgw.routing`): which provider serves the model;
4. egress by the provider's wire format (:mod:`fastgw.egress`): byte relay,
   translation, or the in-process mock;
5. the upstream call (:mod:`fastgw.upstream`);
6. accounting (:mod:`fastgw.controls`) once the answer went out.

Errors anywhere become the error envelope of the API the client speaks (OpenAI's
unless the endpoint says otherwise, :mod:`fastgw.errors`); a worker never dies on
a request.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
from typing import Any

import msgspec

from fastgw.admission.auth import Authorizer
from fastgw.admission.concurrency import InflightLimit
from fastgw.admission.slowclient import SendWatch
from fastgw.config import Config, load_config
from fastgw.controls.runtime import Controls
from fastgw.errors import GatewayError, ResponseAborted
from fastgw.exchange import ClientGone, Exchange, Receive, Send
from fastgw.ingress import admin, ops, passthrough
from fastgw.ingress import anthropic as anthropic_door
from fastgw.ingress import openai as openai_door
from fastgw.routes import RouteTable
from fastgw.routing.providers import Provider, resolved_providers
from fastgw.routing.router import Router
from fastgw.routing.stats import watch_plans
from fastgw.upstream.backend import AsyncioBackend
from fastgw.upstream.client import UpstreamError

GC_YOUNG_THRESHOLD = 10_000
log = logging.getLogger("fastgw")

_encode = msgspec.json.Encoder().encode


def route_table() -> RouteTable:
    """Every front door's endpoints."""
    table = RouteTable()
    for door in (openai_door, anthropic_door, ops, passthrough, admin):
        door.register(table)
    return table


class Gateway:
    """The ASGI application. One per worker process."""

    def __init__(self, config: Config, env: dict[str, str] | None = None) -> None:
        self.config = config
        self.env = dict(os.environ) if env is None else env
        self.max_body = config.server.max_body_bytes
        self.inflight = InflightLimit(config.server.max_concurrent_requests)
        self.sendwatch = SendWatch(config.server.send_timeout, config.server.body_timeout)
        self.backend = AsyncioBackend()
        self.providers = [Provider(p, self.backend) for p in resolved_providers(config, self.env)]
        self.router = Router(self.providers, config.aliases, config.routes)
        self.router.check_aliases()
        self.controls = Controls(config, self.env)
        master = config.master_key or self.env.get("FASTGW_MASTER_KEY") or None
        self.auth = Authorizer(master, self.controls.is_virtual_key)
        self.routes = route_table()
        self.ready = False
        self.draining = False
        self.models_body = b""
        self.models_by_id: dict[str, bytes] = {}
        # The same list in Anthropic's shape (clients sending anthropic-version).
        self.anthropic_models_body = b""
        self.anthropic_models_by_id: dict[str, bytes] = {}

    # -- lifecycle ---------------------------------------------------------

    async def startup(self) -> None:
        from fastgw.routing.discovery import discover_models

        await discover_models(self.providers)
        self.router = Router(self.providers, self.config.aliases, self.config.routes)
        if self.controls.quota is not None:
            self.router.use_quota(self.controls.quota)
        watch_plans(self.router.plans)
        self._build_model_list()
        await self.controls.start([(p.name, p.pool) for p in self.providers if p.pool is not None])
        # Everything built so far (modules, config, tables) lives as long as the worker:
        # move it out of the collector's way, so full collections stay short and a
        # stream is not paused for tens of milliseconds while they walk it.
        self.sendwatch.start()
        gc.collect()
        gc.freeze()
        # A finished request leaves no reference cycle (its objects are freed by reference
        # counting), so the young generation only grows with the requests in flight. With
        # the default threshold (700) that alone starts a collection every few dozen
        # requests, each walking every live request's objects; this one only runs when
        # objects really accumulate, which still bounds any cyclic garbage to a few MB.
        gc.set_threshold(GC_YOUNG_THRESHOLD, 10, 10)
        self.ready = True

    async def shutdown(self) -> None:
        self.draining = True
        await self.sendwatch.stop()
        for provider in self.providers:
            if provider.pool is not None:
                await provider.pool.aclose()
        await self.controls.stop()

    def _build_model_list(self) -> None:
        data = [{"id": mid, "object": "model", "created": 0, "owned_by": owner}
                for mid, owner in self.router.model_list()]
        self.models_body = _encode({"object": "list", "data": data})
        self.models_by_id = {d["id"]: _encode(d) for d in data}
        self.anthropic_models_body, self.anthropic_models_by_id = anthropic_door.model_bodies(
            self.router.model_list())

    # -- ASGI --------------------------------------------------------------

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self.handle(Exchange(scope, receive, send))
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    log.error("start-up failed: %s", exc)
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def handle(self, ex: Exchange) -> None:
        scope = ex.scope
        endpoint = self.routes.match(scope["path"])
        admitted = endpoint is not None and endpoint.admitted
        if endpoint is not None:
            ex.errors = endpoint.errors
        try:
            if endpoint is None:
                raise GatewayError(404, f"Unknown route: {scope['method']} {scope['path']}",
                                   type="invalid_request_error", code="unknown_route")
            if not endpoint.allows(scope["method"]):
                raise _method_not_allowed(endpoint.methods or frozenset())
            if not admitted:
                await endpoint.handler(self, ex, None)
                return
            token = self.auth.authorize(scope)
            inflight = self.inflight
            inflight.enter()
            watched = self.sendwatch.watch(ex)
            try:
                await endpoint.handler(self, ex, token)
            finally:
                self.sendwatch.unwatch(watched)
                inflight.leave()
        except GatewayError as exc:
            ex.error_type = exc.type
            status, body = ex.errors.render(exc)
            await self._fail(ex, status, body, exc.headers)
        except UpstreamError:
            # The upstream failed after the answer started (logged and counted where it happened).
            ex.error_type = "upstream_error"
            if ex.started:
                raise ResponseAborted("the upstream failed mid-response") from None
            await self._fail_with(ex, GatewayError(502, "The upstream provider failed.", type="upstream_error",
                                                   code="upstream_error"))
        except (RecursionError, UnicodeDecodeError) as exc:
            # A body a decoder could not follow (nested too deeply, or a key that is not
            # UTF-8), wherever it was decoded: the client's input, never the gateway's fault.
            ex.error_type = "invalid_request_error"
            what = "nested too deeply" if isinstance(exc, RecursionError) else "not valid UTF-8"
            await self._fail_with(ex, GatewayError(400, f"The request body is {what}.",
                                                   type="invalid_request_error", code="invalid_json"))
        except ClientGone:
            # The client left, or its body broke off (the server saw bad framing): say so in
            # case it is still there (a body that broke off is answered, a gone client hears nothing).
            ex.error_type = "client_disconnected"
            status = ex.status or 499
            if not ex.started:
                answer, body = ex.errors.render(GatewayError(400, "The request body ended before it was complete.",
                                                             type="invalid_request_error", code="incomplete_body"))
                await ex.respond(answer, body)
            ex.status = status
        except (ConnectionError, asyncio.CancelledError):
            # The client left (its body unread, or while the upstream answered), or stopped
            # reading (the send watch abandoned the answer: error_type client_timeout).
            ex.error_type = ex.error_type if ex.error_type == "client_timeout" else "client_disconnected"
            ex.status = ex.status or 499
        except Exception:
            ex.error_type = "api_error"
            log.exception("request %s failed", ex.request_id)
            status, body = ex.errors.render(GatewayError(500, "The gateway failed to handle the request.",
                                                         type="api_error", code="internal_error"))
            await self._fail(ex, status, body, [])
        finally:
            if admitted:
                self.controls.finish(ex)

    async def _fail_with(self, ex: Exchange, exc: GatewayError) -> None:
        """Answer ``exc`` in the door's error envelope."""
        status, body = ex.errors.render(exc)
        await self._fail(ex, status, body, exc.headers)

    async def _fail(self, ex: Exchange, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        if ex.started:
            # The answer is under way: only closing the connection can tell the client.
            raise ResponseAborted("response aborted after an error")
        await ex.respond(status, body, extra=headers)

    async def check_any_key(self, token: str | None) -> None:
        """A presented virtual key must be valid, whatever models it may call (model listing)."""
        if token is not None:
            await self.controls.check_key_any_model(token)


def _method_not_allowed(allowed: frozenset[str]) -> GatewayError:
    names = ", ".join(sorted(allowed))
    return GatewayError(405, f"Method not allowed; use {names}.", type="invalid_request_error",
                        code="method_not_allowed", headers=[(b"allow", names.encode())])


def create_app() -> Gateway:
    """The factory granian's workers call: config from ``FASTGW_CONFIG`` (or the embedded default)."""
    path = os.environ.get("FASTGW_CONFIG") or None
    config = load_config(path)
    logging.basicConfig(level=config.server.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return Gateway(config)

