"""The ASGI entry: routes, gateway auth, and the request's journey.

``POST /v1/chat/completions`` (and completions, embeddings, responses):

1. :func:`fastgw.body.read_body` — the body, within the size limit;
2. :func:`fastgw.body.decode_routing` — only ``model``/``stream``/``stream_options``;
3. :meth:`fastgw.routing.Router.resolve` — provider and upstream model name;
4. by the provider's wire format: :mod:`fastgw.fastpath` relays bytes to an
   OpenAI-compatible upstream (after :func:`fastgw.body.rewrite` when the model
   name or a parameter must change), :mod:`fastgw.translated` goes through
   :mod:`fastgw.translate`, :mod:`fastgw.mock` answers in-process.

Errors anywhere become the OpenAI envelope (:mod:`fastgw.errors`); a worker
never dies on a request.
"""

from __future__ import annotations

import asyncio
import gc
import hmac
import logging
import os
from typing import Any

import msgspec

from fastgw import admin, fastpath, metrics, mock, passthrough
from fastgw import body as bodies
from fastgw.config import Config, load_config
from fastgw.controls import CaptureTap, Controls, stream_usage_path, usage_tap
from fastgw.errors import GatewayError, envelope
from fastgw.exchange import Exchange, Receive, Send, header
from fastgw.providers import Provider, resolved_providers
from fastgw.routing import Route, Router
from fastgw.upstream.backend import AsyncioBackend
from fastgw.usage import USAGE_INJECTED, inject_include_usage

log = logging.getLogger("fastgw")

_encode = msgspec.json.Encoder().encode

# Model endpoints: client path -> the suffix under an OpenAI-compatible base URL.
MODEL_ENDPOINTS = {
    "/v1/chat/completions": "/chat/completions",
    "/v1/completions": "/completions",
    "/v1/embeddings": "/embeddings",
    "/v1/responses": "/responses",
}
STREAMING_ENDPOINTS = frozenset({"/chat/completions", "/completions", "/responses"})


class Gateway:
    """The ASGI application. One per worker process."""

    def __init__(self, config: Config, env: dict[str, str] | None = None) -> None:
        self.config = config
        self.env = dict(os.environ) if env is None else env
        self.max_body = config.server.max_body_bytes
        self.max_inflight = config.server.max_concurrent_requests
        self.inflight = 0
        master = config.master_key or self.env.get("FASTGW_MASTER_KEY") or None
        self.master_auth = b"Bearer " + master.encode() if master else None
        self.backend = AsyncioBackend()
        self.providers = [Provider(p, self.backend) for p in resolved_providers(config, self.env)]
        self.router = Router(self.providers, config.aliases)
        self.router.check_aliases()
        self.controls = Controls(config, self.env)
        self.ready = False
        self.draining = False
        self._models_body = b""
        self._models_by_id: dict[str, bytes] = {}

    # -- lifecycle ---------------------------------------------------------

    async def startup(self) -> None:
        from fastgw.discovery import discover_models

        await discover_models(self.providers)
        self.router = Router(self.providers, self.config.aliases)
        self._build_model_list()
        await self.controls.start([(p.name, p.pool) for p in self.providers if p.pool is not None])
        # Everything built so far (modules, config, tables) lives as long as the worker:
        # move it out of the collector's way, so full collections stay short and a
        # stream is not paused for tens of milliseconds while they walk it.
        gc.collect()
        gc.freeze()
        self.ready = True

    async def shutdown(self) -> None:
        self.draining = True
        for provider in self.providers:
            if provider.pool is not None:
                await provider.pool.aclose()
        await self.controls.stop()

    def _build_model_list(self) -> None:
        data = [{"id": mid, "object": "model", "created": 0, "owned_by": owner}
                for mid, owner in self.router.model_list()]
        self._models_body = _encode({"object": "list", "data": data})
        self._models_by_id = {d["id"]: _encode(d) for d in data}

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
        path: str = scope["path"]
        method: str = scope["method"]
        accounted = False
        try:
            suffix = MODEL_ENDPOINTS.get(path)
            if suffix is not None:
                accounted = True
                if method != "POST":
                    raise _method_not_allowed("POST")
                token = self._authorize(scope)
                self._admit()
                try:
                    await self.model_endpoint(ex, suffix, token)
                finally:
                    self.inflight -= 1
            elif path == "/health":
                await ex.respond(200, b'{"status":"ok"}')
            elif path == "/ready":
                ok = self.ready and not self.draining
                await ex.respond(200 if ok else 503,
                                 b'{"status":"ready"}' if ok else b'{"status":"not ready"}')
            elif path == "/metrics":
                if method != "GET":
                    raise _method_not_allowed("GET")
                await ex.respond(200, await metrics.render_metrics(self.controls.metrics_dir),
                                 content_type=b"text/plain; version=0.0.4; charset=utf-8")
            elif path == "/v1/models":
                if method != "GET":
                    raise _method_not_allowed("GET")
                await self._check_any_key(self._authorize(scope))
                await ex.respond(200, self._models_body)
            elif path.startswith("/v1/models/"):
                if method != "GET":
                    raise _method_not_allowed("GET")
                await self._check_any_key(self._authorize(scope))
                self._model_detail(path[len("/v1/models/"):])
                await ex.respond(200, self._models_by_id[path[len("/v1/models/"):]])
            elif path.startswith("/p/"):
                accounted = True
                token = self._authorize(scope)
                self._admit()
                try:
                    await self._passthrough(ex, token)
                finally:
                    self.inflight -= 1
            elif path == "/admin" or path.startswith("/admin/"):
                await self._admin(ex)
            else:
                raise GatewayError(404, f"Unknown route: {method} {path}", type="invalid_request_error",
                                   code="unknown_route")
        except GatewayError as exc:
            ex.error_type = exc.type
            await self._fail(ex, exc.status, exc.body(), exc.headers)
        except (bodies.ClientDisconnected, fastpath.ClientGone):
            ex.error_type = "client_disconnected"
            ex.status = ex.status or 499
        except Exception as exc:
            if _client_gone(exc):
                ex.error_type = "client_disconnected"
                ex.status = ex.status or 499
                return
            ex.error_type = "api_error"
            log.exception("request %s failed", ex.request_id)
            await self._fail(ex, 500, envelope("The gateway failed to handle the request.", "api_error", None,
                                               "internal_error"), [])
        finally:
            if accounted:
                self.controls.finish(ex)

    async def _fail(self, ex: Exchange, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        if ex.started:
            # The answer is under way: only closing the connection can tell the client.
            raise ConnectionAbortedError("response aborted after an error")
        await ex.respond(status, body, extra=headers)

    def _authorize(self, scope: dict[str, Any]) -> str | None:
        """Gateway auth. Returns a virtual key to check against the model, or None.

        With a master key configured, a request must carry it or a virtual key
        (``sk-fgw-...``, checked later against the model). Without one, requests
        are open, but a virtual key that is presented is still checked (budgets,
        allowed models). The master key comparison is constant-time.
        """
        value = header(scope, b"authorization")
        token = value[7:].decode("latin-1") if value is not None and value[:7].lower() == b"bearer " else None
        if token is not None and self.controls.is_virtual_key(token):
            return token
        expected = self.master_auth
        if expected is None:
            return None
        if value is not None and hmac.compare_digest(b"Bearer " + value[7:], expected):
            return None
        raise GatewayError(401, "Invalid or missing API key. Send 'Authorization: Bearer <key>'.",
                           type="authentication_error", code="invalid_api_key")

    def _admit(self) -> None:
        """Count a request in; past the limit answer 503 at once (bounded, never queued)."""
        if self.inflight >= self.max_inflight:
            raise GatewayError(503, "The gateway is at its limit of concurrent requests; retry shortly.",
                               type="overloaded", code="gateway_overloaded", headers=[(b"retry-after", b"1")])
        self.inflight += 1

    async def _check_any_key(self, token: str | None) -> None:
        if token is not None:
            await self.controls.check_key_any_model(token)

    async def _admin(self, ex: Exchange) -> None:
        scope = ex.scope
        expected = self.master_auth
        value = header(scope, b"authorization") or b""
        if expected is None:
            raise GatewayError(403, "The admin API needs a master key (FASTGW_MASTER_KEY or master_key).",
                               type="permission_error", code="admin_disabled")
        if not hmac.compare_digest(b"Bearer " + value[7:], expected) or value[:7].lower() != b"bearer ":
            raise GatewayError(401, "The admin API needs the master key: 'Authorization: Bearer <key>'.",
                               type="authentication_error", code="invalid_api_key")
        body = await bodies.read_body(scope, ex.receive, self.max_body)
        controls = self.controls
        assert controls.keys is not None and controls.store is not None
        ctx = admin.AdminContext(controls.keys, controls.store, controls.logger)
        status, payload = await admin.handle(scope["method"], scope["path"], scope.get("query_string", b"").decode(
            "latin-1"), body, ctx)
        await ex.respond(status, payload)

    def _model_detail(self, model_id: str) -> None:
        if model_id not in self._models_by_id:
            raise GatewayError(404, f"The model '{model_id}' does not exist. See GET /v1/models.",
                               type="invalid_request_error", param="model", code="model_not_found")

    # -- the journey -------------------------------------------------------

    async def model_endpoint(self, ex: Exchange, suffix: str, token: str | None = None) -> None:
        body = await bodies.read_body(ex.scope, ex.receive, self.max_body)
        routing = bodies.decode_routing(body)
        stream = routing.stream
        if stream and suffix not in STREAMING_ENDPOINTS:
            raise bodies.bad_request(f"Streaming is not supported on {suffix[1:]}.", param="stream")
        ex.model = routing.model
        ex.stream = stream
        route = self.router.resolve(routing.model)
        provider = route.provider
        ex.provider = provider.name
        ex.provider_type = provider.type
        ex.upstream_model = route.upstream_model
        controls = self.controls
        if token is not None:
            try:
                ex.key = await controls.check_key(token, routing.model, f"{provider.name}/{route.upstream_model}")
            except GatewayError:
                # Refused (model, budget, expiry): still attribute the record to the key.
                ex.key = controls.keys.lookup_cached(token) if controls.keys is not None else None
                raise
        if controls.capture_bodies:
            ex.body = body
        if stream:
            metrics.stream_started()
        try:
            await self._dispatch(ex, suffix, body, routing, route)
        finally:
            if stream:
                metrics.stream_ended()

    async def _dispatch(self, ex: Exchange, suffix: str, body: bytes, routing: bodies.Routing,
                        route: Route) -> None:
        provider = route.provider
        stream = routing.stream
        if provider.wire == "mock":
            ex.path_taken = "mock"
            ex.usage_path = "mock"
            await mock.serve(ex, provider.cfg.mock, suffix, route.upstream_model, body, stream,
                             routing.include_usage)
            return
        if provider.wire != "openai":
            from fastgw import translated

            ex.path_taken = "translated"
            ex.usage_path = "translated"
            ex.usage = await translated.handle(ex, provider, route, suffix, body, routing)
            return
        controls = self.controls
        usage_path = stream_usage_path(suffix, stream, routing.include_usage, controls.inject_usage)
        inject = usage_path == USAGE_INJECTED
        rename = (suffix == "/chat/completions" and b'"max_tokens"' in body
                  and bodies.needs_max_completion_tokens(provider.type, route.upstream_model))
        path_taken = "fast"
        if route.rewrite or rename or (inject and routing.has_stream_options):
            new = bodies.rewrite(body, model_json=route.upstream_model_json if route.rewrite else None,
                                 rename_max_tokens=rename,
                                 edit=inject_include_usage if inject else None)
            if new is not None:
                body = new
                path_taken = "rewritten"
        elif inject:
            # No stream_options at all: splice it in front, no parsing (still the fast path).
            body = bodies.splice_first_member(body, b'"stream_options":{"include_usage":true}')
        ex.path_taken = path_taken
        ex.usage_path = usage_path
        tap = usage_tap(suffix, stream, usage_path)
        if controls.capture_bodies and stream:
            tap = CaptureTap(tap, controls.config.logging.body_cap)
        ex.tap = tap
        await fastpath.relay(ex, provider, provider.target_for(suffix), body, stream=stream,
                             client_auth=header(ex.scope, b"authorization"), tap=tap)

    async def _passthrough(self, ex: Exchange, token: str | None = None) -> None:
        raw_path: bytes = ex.scope.get("raw_path") or ex.scope["path"].encode()
        raw_path = raw_path.split(b"?", 1)[0]
        _, _, rest = raw_path.partition(b"/p/")
        name, _, tail = rest.partition(b"/")
        provider = next((p for p in self.providers if p.name_bytes == name), None)
        if provider is None:
            raise GatewayError(404, f"No provider named '{name.decode('latin-1')}' is configured.",
                               type="invalid_request_error", code="unknown_provider")
        if token is not None:
            ex.key = await self.controls.check_key_any_model(token)
            if ex.key.models:
                raise GatewayError(403, "This key is limited to some models; the raw passthrough is not "
                                   "available to it.", type="permission_error", code="model_not_allowed")
        ex.provider = provider.name
        ex.provider_type = provider.type
        await passthrough.handle(ex, provider, b"/" + tail)


def _method_not_allowed(allowed: str) -> GatewayError:
    return GatewayError(405, f"Method not allowed; use {allowed}.", type="invalid_request_error",
                        code="method_not_allowed", headers=[(b"allow", allowed.encode())])


def _client_gone(exc: BaseException) -> bool:
    name = type(exc).__name__
    return isinstance(exc, ConnectionError | asyncio.CancelledError) or "Disconnect" in name or "ClientDisconnected" in name


def create_app() -> Gateway:
    """The factory granian's workers call: config from ``FASTGW_CONFIG`` (or the embedded default)."""
    path = os.environ.get("FASTGW_CONFIG") or None
    config = load_config(path)
    logging.basicConfig(level=config.server.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return Gateway(config)
