"""The per-worker control plane: opens the store, key cache, request logger and metrics
writer, checks virtual keys, and hands finished exchanges to accounting.

One :class:`Controls` per worker. The request path touches it twice:

* :meth:`Controls.check_key` before routing a request made with a virtual key
  (``sk-fgw-...``): a cache lookup; the store is read only on a miss;
* :meth:`Controls.finish` once the answer went out (:func:`fastgw.controls.accounting.account`).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import msgspec

from fastgw.config import Config
from fastgw.controls import metrics
from fastgw.controls.accounting import account
from fastgw.controls.keys import KEY_PREFIX, KeyManager, KeyRecord
from fastgw.controls.pricing import Pricing
from fastgw.controls.reqlog import RequestLogger
from fastgw.controls.store import DEFAULT_URL, Store, open_store
from fastgw.errors import GatewayError
from fastgw.exchange import Exchange

log = logging.getLogger("fastgw.controls.runtime")


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
            account(ex, self.pricing, self.keys, self.logger, self.capture_bodies)
        except Exception:
            log.exception("request %s: accounting failed", ex.request_id)

def metrics_dir_for_serve() -> str:
    """A fresh directory the workers share for metric snapshots (set before they start)."""
    import tempfile

    path = tempfile.mkdtemp(prefix="fastgw-metrics-")
    os.environ[metrics.ENV_DIR] = path
    return path
