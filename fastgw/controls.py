"""Production controls around the journey: virtual keys, usage and cost, the
request log and metrics.

One :class:`Controls` per worker. The request path touches it twice:

* :meth:`Controls.check_key` before routing a request made with a virtual key
  (``sk-fgw-...``): a cache lookup; the store is read only on a miss;
* :meth:`Controls.finish` once the answer went out: usage (from the tap the
  relay fed, or the translator), cost from the pricing table, the key's spend,
  metrics, and one request-log record put on a bounded queue. All of it is
  in-memory work; the store is written in batches by background tasks.

Usage taps (:func:`usage_tap`) see the relayed bytes without copying them:
the JSON body of a non-streaming answer, the last event of a chat stream, the
``response.completed`` event of a Responses stream.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import msgspec

from fastgw import metrics
from fastgw.config import Config
from fastgw.errors import GatewayError, type_for_status
from fastgw.exchange import Exchange, header
from fastgw.keys import KEY_PREFIX, KeyManager, KeyRecord
from fastgw.pricing import Pricing
from fastgw.reqlog import RequestLogger, RequestRecord, derive_conversation_id
from fastgw.store import DEFAULT_URL, Store, open_store
from fastgw.usage import (
    USAGE_BODY,
    USAGE_CLIENT,
    USAGE_INJECTED,
    USAGE_NONE,
    USAGE_RESPONSES,
    ResponsesUsageTap,
    StreamUsageTap,
    Usage,
    usage_from_json_body,
)

log = logging.getLogger("fastgw.controls")

BODY_TAP_LIMIT = 16 * 1024 * 1024


class BodyTap:
    """Keeps references to a non-streaming answer's chunks; decodes only ``usage`` at the end."""

    __slots__ = ("_chunks", "_size")

    def __init__(self) -> None:
        self._chunks: list[bytes] = []
        self._size = 0

    def feed(self, chunk: bytes) -> bytes:
        if self._size < BODY_TAP_LIMIT:
            self._chunks.append(chunk)
            self._size += len(chunk)
        return chunk

    def close(self) -> bytes:
        return b""

    def body(self) -> bytes:
        return self._chunks[0] if len(self._chunks) == 1 else b"".join(self._chunks)

    @property
    def usage(self) -> Usage | None:
        return usage_from_json_body(self.body()) if self._chunks else None


class CaptureTap:
    """Wraps a stream's tap to keep what the client received (audit log), up to ``cap`` bytes."""

    __slots__ = ("_cap", "_inner", "_kept", "_size")

    def __init__(self, inner: Any, cap: int) -> None:
        self._inner = inner
        self._cap = cap
        self._kept: list[bytes] = []
        self._size = 0

    def feed(self, chunk: bytes) -> bytes:
        out = self._inner.feed(chunk) if self._inner is not None else chunk
        if self._size < self._cap and out:
            self._kept.append(out)
            self._size += len(out)
        return out

    def close(self) -> bytes:
        out = self._inner.close() if self._inner is not None else b""
        if out and self._size < self._cap:
            self._kept.append(out)
        return out

    @property
    def usage(self) -> Usage | None:
        return self._inner.usage if self._inner is not None else None

    def captured(self) -> bytes:
        return b"".join(self._kept)


def usage_tap(suffix: str, stream: bool, usage_path: str) -> Any:
    """The tap for an answer: what it must see, and whether it strips an injected usage chunk."""
    if not stream:
        return BodyTap()
    if suffix == "/responses":
        return ResponsesUsageTap()
    if usage_path == USAGE_NONE:
        return None
    return StreamUsageTap(strip_usage_chunk=usage_path == USAGE_INJECTED)


def stream_usage_path(suffix: str, stream: bool, client_asked: bool, inject: bool) -> str:
    if not stream:
        return USAGE_BODY
    if suffix == "/responses":
        return USAGE_RESPONSES
    if client_asked:
        return USAGE_CLIENT
    return USAGE_INJECTED if inject else USAGE_NONE


class Controls:
    def __init__(self, config: Config, env: dict[str, str]) -> None:
        self.config = config
        self.store_url = config.store_url or env.get("FASTGW_STORE_URL") or DEFAULT_URL
        self.inject_usage = config.usage.inject_stream_usage
        overrides = {name: msgspec.structs.asdict(p) for name, p in config.pricing.items()}
        self.pricing = Pricing.load(overrides or None)
        self.capture_bodies = config.logging.log_bodies or config.logging.audit
        self.metrics_dir = env.get(metrics.ENV_DIR) or None
        self.store: Store | None = None
        self.keys: KeyManager | None = None
        self.logger: RequestLogger | None = None
        self._writer: metrics.SnapshotWriter | None = None

    async def start(self, pools: list[tuple[str, Any]]) -> None:
        cfg = self.config.logging
        self.store = await open_store(self.store_url)
        self.keys = KeyManager(self.store, cache_ttl=self.config.keys_cache_ttl)
        self.keys.start()
        if cfg.enabled:
            self.logger = RequestLogger(
                self.store,
                queue_size=cfg.queue_size,
                batch_size=cfg.batch_size,
                flush_interval=cfg.flush_interval,
                log_bodies=self.capture_bodies,
                body_cap=cfg.body_cap,
                retention_days=cfg.retention_days,
            )
            self.logger.start()
            metrics.watch_request_logger(self.logger)

        def pool_stats() -> None:
            for name, pool in pools:
                metrics.set_pool(name, pool.in_use, len(pool.idle))

        metrics.register_collector(pool_stats)
        if self.metrics_dir:
            self._writer = metrics.SnapshotWriter(self.metrics_dir)
            self._writer.start()

    async def stop(self) -> None:
        if self.logger is not None:
            await self.logger.stop()
        if self.keys is not None:
            await self.keys.close()
        if self._writer is not None:
            await self._writer.stop()
        if self.store is not None:
            await self.store.close()

    # -- keys ---------------------------------------------------------------

    @staticmethod
    def is_virtual_key(token: str) -> bool:
        return token.startswith(KEY_PREFIX)

    async def check_key(self, token: str, model: str, qualified: str | None = None) -> KeyRecord:
        """The key's record if it may call ``model`` (or its ``provider/model`` form)."""
        assert self.keys is not None
        try:
            return await self.keys.authenticate(token, model)
        except GatewayError as exc:
            if exc.code != "model_not_allowed" or qualified is None:
                raise
            record = self.keys.lookup_cached(token)
            if record is None:
                raise
            return self.keys.check(record, qualified)

    async def check_key_any_model(self, token: str) -> KeyRecord:
        """A valid key, whatever models it may call (model listing)."""
        assert self.keys is not None
        try:
            return await self.keys.authenticate(token, "")
        except GatewayError as exc:
            record = self.keys.lookup_cached(token) if exc.code == "model_not_allowed" else None
            if record is None:
                raise
            return record

    # -- after each request -------------------------------------------------

    def finish(self, ex: Exchange) -> None:
        """Account for a finished exchange. Never raises; never waits on I/O."""
        try:
            self._finish(ex)
        except Exception:
            log.exception("request %s: accounting failed", ex.request_id)

    def _finish(self, ex: Exchange) -> None:
        now = time.perf_counter()
        total = now - ex.t_start
        upstream = ex.upstream
        wait = upstream.wait if upstream is not None else ex.upstream_wait
        ttfb = (ex.t_first - ex.t_start) if ex.t_first else None
        status = ex.status
        model = ex.upstream_model
        provider = ex.provider
        usage = ex.usage
        tap = ex.tap
        if usage is None and tap is not None and 200 <= status < 300:
            usage = tap.usage
        metrics.observe_request(provider, model, status, ex.path_taken or "none", total, ttfb,
                                max(0.0, total - wait))
        if ex.usage_path:
            metrics.observe_usage_path(ex.usage_path if usage is not None or ex.usage_path == USAGE_NONE
                                       else ex.usage_path + "_missing")
        cost = None
        prompt = completion = cached = reasoning = None
        if usage is not None:
            prompt = usage.prompt_tokens
            completion = usage.completion_tokens
            cached = getattr(usage, "cached_tokens", 0) or 0
            reasoning = getattr(usage, "reasoning_tokens", 0) or 0
            cost = self.pricing.cost(model, ex.provider_type or None, prompt, completion, cached)
            metrics.observe_usage(provider, model, prompt, completion, cached, reasoning, cost)
        key = ex.key
        if key is not None and cost and self.keys is not None:
            self.keys.record_spend(key.id, cost)
        logger = self.logger
        if logger is None:
            return
        record = RequestRecord(
            request_id=ex.request_id,
            ts=time.time() - total,
            key_id=key.id if key is not None else None,
            key_name=key.name if key is not None else None,
            provider=provider or None,
            model=model or ex.model or None,
            path=ex.path_taken or None,
            stream=ex.stream,
            status=status,
            # An upstream 4xx/5xx is relayed as is (no GatewayError): type it by its status.
            error_type=ex.error_type or (type_for_status(status) if status >= 400 else None),
            ttfb_ms=ttfb * 1000 if ttfb is not None else None,
            total_ms=total * 1000,
            prompt_tokens=prompt,
            completion_tokens=completion,
            cached_tokens=cached,
            reasoning_tokens=reasoning,
            cost_usd=cost,
        )
        if self.capture_bodies and ex.body is not None:
            record.request_body = ex.body
            given = header(ex.scope, b"x-fastgw-conversation-id")
            record.conversation_id = (given.decode("latin-1")[:200] if given
                                      else derive_conversation_id(record.key_id, ex.body))
            if isinstance(tap, BodyTap):
                record.response_body = tap.body()
            elif tap is not None and hasattr(tap, "captured"):
                record.response_body = tap.captured()
        logger.log(record)


def metrics_dir_for_serve() -> str:
    """A fresh directory the workers share for metric snapshots (set before they start)."""
    import tempfile

    path = tempfile.mkdtemp(prefix="fastgw-metrics-")
    os.environ[metrics.ENV_DIR] = path
    return path
