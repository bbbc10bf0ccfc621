"""Accounting for a finished exchange: usage, cost, the key's spend, metrics, one log record.

:func:`account` runs once the answer went out. Usage comes from the exchange (a
translator or the mock set it) or from the tap the relay fed; cost from the
pricing table. All of it is in-memory work: spend and the request-log record go
on bounded queues that background tasks write to the store in batches.
"""

from __future__ import annotations

import time

from fastgw.controls import metrics
from fastgw.controls.estimate import estimate_stream_usage
from fastgw.controls.keys import KeyManager
from fastgw.controls.pricing import Pricing
from fastgw.controls.reqlog import RequestLogger, RequestRecord, derive_conversation_id
from fastgw.controls.usage import USAGE_NONE, BodyTap, Usage
from fastgw.errors import type_for_status
from fastgw.exchange import Exchange, header


def account(ex: Exchange, pricing: Pricing, keys: KeyManager | None, logger: RequestLogger | None,
            capture_bodies: bool) -> Usage | None:
    """Record one finished exchange and return its usage. Never waits on I/O."""
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
    estimated = False
    if usage is None and tap is not None and 200 <= status < 300:
        usage = tap.usage
        if usage is None and ex.stream and ex.error_type in ("client_disconnected", "client_timeout"):
            # The client left before the provider's usage arrived: bill what was generated.
            length = header(ex.scope, b"content-length")
            usage = estimate_stream_usage(tap, int(length) if length and length.isdigit() else 0)
            estimated = usage is not None
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
        written = getattr(usage, "cache_write_tokens", 0) or 0
        cost = pricing.cost(model, ex.provider_type or None, prompt, completion, cached, written)
        metrics.observe_usage(provider, model, prompt, completion, cached, reasoning, cost)
    key = ex.key
    if key is not None and keys is not None:
        # A budgeted key reserved an estimate before the request: spend the difference.
        ticket = ex.ticket
        spend = (cost or 0.0) - (ticket.reserved_usd if ticket is not None else 0.0)
        if spend:
            keys.record_spend(key.id, spend)
    if logger is None:
        return usage
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
        usage_estimated=estimated,
        attempts=" ".join(ex.attempt_log) if ex.attempt_log else None,
    )
    if capture_bodies and ex.body is not None:
        record.request_body = ex.body
        given = header(ex.scope, b"x-fastgw-conversation-id")
        record.conversation_id = (given.decode("latin-1")[:200] if given
                                  else derive_conversation_id(record.key_id, ex.body))
        if isinstance(tap, BodyTap):
            record.response_body = tap.body()
        elif tap is not None and hasattr(tap, "captured"):
            record.response_body = tap.captured()
    logger.log(record)
    return usage
