"""The built-in mock model on the Anthropic Messages front door: an Anthropic-shaped answer.

The same words and pacing as :mod:`fastgw.egress.mock` (``words``, ``ttfb_ms``,
``interval_ms``), as a ``message`` JSON body or the Messages event stream (``message_start``,
``ping``, one ``text`` block with a ``text_delta`` per word, ``message_delta`` with
``end_turn`` or ``max_tokens`` and usage, ``message_stop``).
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec

from fastgw.config import MockOptions
from fastgw.controls.usage import Usage
from fastgw.egress.mock import _text
from fastgw.exchange import Exchange

__all__ = ["serve"]

_encode = msgspec.json.Encoder().encode
_SSE = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache")]


def _event(name: str, payload: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + _encode(payload) + b"\n\n"


async def serve(ex: Exchange, opts: MockOptions, model: str, request: dict[str, Any], stream: bool) -> None:
    """Answer one ``/v1/messages`` request to the mock provider."""
    limit = request.get("max_tokens")
    limit = limit if isinstance(limit, int) and limit > 0 else None
    n = max(1, min(opts.words, limit) if limit else opts.words)
    words = _text(n)
    prompt = max(1, len(_encode(request.get("messages"))) // 4)
    ex.usage = Usage(prompt_tokens=prompt, completion_tokens=n, total_tokens=prompt + n)
    stop = "max_tokens" if limit is not None and limit <= opts.words else "end_turn"
    message = {"id": "msg_" + ex.request_id[4:], "type": "message", "role": "assistant", "model": model,
               "content": [], "stop_reason": None, "stop_sequence": None,
               "usage": {"input_tokens": prompt, "output_tokens": 0}}
    if opts.ttfb_ms:
        await asyncio.sleep(opts.ttfb_ms / 1000)
    if not stream:
        message.update(content=[{"type": "text", "text": "".join(words)}], stop_reason=stop,
                       usage={"input_tokens": prompt, "output_tokens": n})
        await ex.respond(200, _encode(message))
        return
    await ex.start(200, _SSE + ex.gateway_headers())
    send = ex.send
    head = (_event("message_start", {"type": "message_start", "message": message})
            + _event("content_block_start", {"type": "content_block_start", "index": 0,
                                             "content_block": {"type": "text", "text": ""}})
            + _event("ping", {"type": "ping"}))
    await send({"type": "http.response.body", "body": head, "more_body": True})
    for word in words:
        if opts.interval_ms:
            await asyncio.sleep(opts.interval_ms / 1000)
        delta = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": word}}
        await send({"type": "http.response.body", "body": _event("content_block_delta", delta), "more_body": True})
    tail = (_event("content_block_stop", {"type": "content_block_stop", "index": 0})
            + _event("message_delta", {"type": "message_delta",
                                       "delta": {"stop_reason": stop, "stop_sequence": None},
                                       "usage": {"output_tokens": n}})
            + _event("message_stop", {"type": "message_stop"}))
    await send({"type": "http.response.body", "body": tail, "more_body": False})
