"""The per-worker control plane: opens the store, key cache, request logger and metrics
writer, checks virtual keys, and hands finished exchanges to accounting.

One :class:`Controls` per worker. The request path touches it twice:

* :meth:`Controls.check_key` before routing a request made with a virtual key
  (``sk-fgw-...``): a cache lookup; the store is read only on a miss;
* :meth:`Controls.admit` once the route is known: the key's rate and concurrency limits
  (:mod:`fastgw.admission.limits`; model and provider limits are counted per upstream
  attempt by :mod:`fastgw.admission.quota`) and a budgeted key's reservation
  (:mod:`fastgw.controls.budgets`); nothing to do (no await on I/O) when none apply;
* :meth:`Controls.finish` once the answer went out (:func:`fastgw.controls.accounting.account`),
  which also settles the admission and the serving target's ticket (frees concurrency
  slots, corrects token counts).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import msgspec

from fastgw.admission.limits import NO_RULES, Limiter, Ticket
from fastgw.admission.memory_limits import MemoryBackend
from fastgw.admission.quota import Quota
from fastgw.config import Config
from fastgw.controls import metrics
from fastgw.controls.accounting import account
from fastgw.controls.budgets import Budgets
from fastgw.controls.keys import KEY_PREFIX, KeyManager, KeyRecord
from fastgw.controls.looplag import LoopLagProbe
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
        self.workers = int(env.get("FASTGW_WORKERS") or config.server.workers)
        self.redis: Any = None  # fastgw.shared.redis.SharedRedis when redis.url is set
        lim = config.limits
        self.limits_backend = "redis" if lim.backend == "redis" or (
            lim.backend == "auto" and config.redis.url) else "memory"
        divisor = self.workers if self.limits_backend == "memory" and not lim.per_worker else 1
        self.limits = Limiter(lim, MemoryBackend(lim.concurrency_lease), divisor=max(1, divisor),
                              fail_open=config.redis.fail_mode == "open")
        # Model and provider limits are counted per upstream attempt (the router sends every
        # limited model through the attempt loop); None when there are none.
        self.quota = (Quota(lim, self.limits, shared=self.limits_backend == "redis")
                      if self.limits.has_config_rules else None)
        self.budgets: Budgets | None = None
        self.cache: Any = None  # fastgw.cache.serve.ResponseCache when cache.routes lists endpoints
        self._lag = LoopLagProbe()

    async def start(self, pools: list[tuple[str, Any]]) -> None:
        cfg = self.config.logging
        self.store = await open_store(self.store_url)
        self.keys = KeyManager(self.store, cache_ttl=self.config.keys_cache_ttl)
        self.keys.start()
        self.budgets = Budgets(self.config.budgets, self.pricing, self.keys)
        if self.config.redis.url:
            from fastgw.shared.redis import SharedRedis

            self.redis = SharedRedis(self.config.redis)
            if not await self.redis.ping():
                log.warning("redis is not reachable at start-up; fail mode %s until it is",
                            self.config.redis.fail_mode)
        if self.limits_backend == "redis":
            from fastgw.admission.redis_limits import RedisBackend

            self.limits.backend = RedisBackend(self.redis, self.config.limits.concurrency_lease)
        await self.limits.backend.start()
        if self.config.cache.routes:
            from fastgw.cache.serve import build_cache

            self.cache = build_cache(self.config.cache, self.redis)
        log.info("%s", self.limits.describe(self.workers, self.limits_backend))
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
        self._lag.start()
        if self.metrics_dir:
            self._writer = metrics.SnapshotWriter(self.metrics_dir)
            self._writer.start()

    async def stop(self) -> None:
        await self.limits.backend.stop()
        if self.cache is not None:
            await self.cache.stop()
        if self.redis is not None:
            await self.redis.close()
        self._lag.stop()
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

    # -- admission ------------------------------------------------------------

    async def admit(self, ex: Exchange, body: bytes, fields: Any = None) -> None:
        """Limits, then a budgeted key's reservation; sets ``ex.ticket``. Raises 429/403/503.
        ``fields``: the body's output caps as the front door decoded them (for token estimates)."""
        key = ex.key
        limits = self.limits
        if limits.backend.sync:  # in-process: no coroutine to run
            ticket = limits.admit_now(key, body, ex.request_id, fields)
        else:
            ticket = await limits.admit(key, body, ex.request_id, fields)
        if key is not None and key.budget_usd is not None and self.budgets is not None:
            try:
                reserved = await self.budgets.reserve(key, ex.upstream_model, ex.provider_type, body, fields)
            except BaseException:
                if ticket is not None:
                    self.limits.give_back(ticket)  # refused before anything went upstream
                raise
            if ticket is None:
                ticket = Ticket(NO_RULES, ex.request_id, 0, 0)
            ticket.reserved_usd = reserved
        ex.ticket = ticket

    # -- after each request -------------------------------------------------

    def finish(self, ex: Exchange) -> None:
        """Account for a finished exchange. Never raises; never waits on I/O."""
        usage = None
        try:
            usage = account(ex, self.pricing, self.keys, self.logger, self.capture_bodies)
        except Exception:
            log.exception("request %s: accounting failed", ex.request_id)
        ticket = ex.ticket
        held = ex.held
        if (ticket is not None and ticket.rules) or held is not None:
            if usage is not None:
                tokens: int | None = (usage.prompt_tokens or 0) + (usage.completion_tokens or 0)
            else:
                # A refused or failed request used nothing; a client that left may have.
                tokens = 0 if ex.status >= 400 and ex.status != 499 else None
            try:
                if ticket is not None and ticket.rules:
                    self.limits.settle(ticket, tokens)
                if held is not None and self.quota is not None:
                    ex.held = None
                    self.quota.release(held, tokens)
            except Exception:
                log.exception("request %s: settling limits failed", ex.request_id)

def metrics_dir_for_serve() -> str:
    """A fresh directory the workers share for metric snapshots (set before they start)."""
    import tempfile

    path = tempfile.mkdtemp(prefix="fastgw-metrics-")
    os.environ[metrics.ENV_DIR] = path
    return path
