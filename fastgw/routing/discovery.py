"""Model discovery: ask an upstream's ``GET /models`` at start-up.

Only providers with ``discover_models: true`` are asked. Each ask is bounded
(5 s, at most 10,000 models, 8 MiB); a failure is logged and start-up goes on
with the models the config lists.
"""

from __future__ import annotations

import asyncio
import logging

import msgspec

from fastgw.routing.providers import Provider
from fastgw.upstream.call import open_upstream

log = logging.getLogger("fastgw.routing.discovery")

DISCOVERY_TIMEOUT = 5.0
MAX_MODELS = 10_000
MAX_BYTES = 8 * 1024 * 1024


class _Model(msgspec.Struct):
    id: str


class _ModelList(msgspec.Struct):
    data: list[_Model]


_decoder = msgspec.json.Decoder(_ModelList)


async def _discover(provider: Provider) -> None:
    headers = [(b"host", provider.host_header), (b"accept", b"application/json")]
    headers += provider.auth_headers + provider.extra_headers
    async with asyncio.timeout(DISCOVERY_TIMEOUT):
        resp = await open_upstream(provider, b"GET", provider.target(b"/models"), headers, b"")
        try:
            body = await resp.read(MAX_BYTES)
        finally:
            await resp.aclose()
    if resp.status != 200:
        raise ValueError(f"GET /models answered {resp.status}")
    found = [m.id for m in _decoder.decode(body).data][:MAX_MODELS]
    new = [m for m in found if m not in provider.exact_models]
    provider.models.extend(new)
    provider.exact_models.update(new)
    log.info("provider %s: discovered %d models", provider.name, len(found))


async def discover_models(providers: list[Provider]) -> None:
    """Discover models for every provider that asks for it, concurrently."""
    wanted = [p for p in providers if p.cfg.discover_models and p.pool is not None and p.wire == "openai"]
    if not wanted:
        return
    results = await asyncio.gather(*(_discover(p) for p in wanted), return_exceptions=True)
    for provider, result in zip(wanted, results, strict=True):
        if isinstance(result, BaseException):
            reason = "timed out" if isinstance(result, TimeoutError) else str(result)[:200]
            log.warning("provider %s: model discovery failed (%s); using the configured models",
                        provider.name, reason)
