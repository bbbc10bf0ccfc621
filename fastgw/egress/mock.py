"""The built-in ``mock`` provider: a fake model answered in-process.

It needs no key and no network, so ``curl`` gets an answer right after
``fastgw serve`` starts. It speaks the exact OpenAI wire format: chat
completions (JSON and SSE, with the usage chunk when
``stream_options.include_usage`` is set), legacy completions, embeddings and
the Responses API (JSON and SSE events).

Length and pacing come from the provider's ``mock`` options (``words``,
``ttfb_ms``, ``interval_ms``); a request's ``max_tokens`` /
``max_completion_tokens`` / ``max_output_tokens`` caps the length (one word =
one token = one stream chunk).
"""

from __future__ import annotations

import asyncio
import base64
import struct
import time
from typing import Any

import msgspec

from fastgw.config import MockOptions
from fastgw.controls.usage import Usage
from fastgw.exchange import Exchange

_WORDS = ["This", "is", "fastgw's", "built-in", "mock", "model", "answering", "in", "the", "OpenAI", "wire", "format", "so", "you", "can", "see", "the", "gateway", "work", "before", "configuring", "a", "real", "provider.", "Point", "your", "base", "URL", "here", "and", "set", "a", "provider", "key", "to", "route", "real", "traffic."]


class _MockRequest(msgspec.Struct):
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    max_output_tokens: int | None = None
    input: Any = None
    dimensions: int | None = None
    encoding_format: str | None = None


_decoder = msgspec.json.Decoder(_MockRequest)
_encode = msgspec.json.Encoder().encode


def _text(n: int) -> list[str]:
    return [(" " if i else "") + _WORDS[i % len(_WORDS)] for i in range(n)]


def _usage(prompt: int, completion: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                      "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0},
    }


async def serve(ex: Exchange, opts: MockOptions, endpoint: str, model: str, body: bytes,
                stream: bool, include_usage: bool) -> None:
    """Answer one request to the mock provider."""
    try:
        req = _decoder.decode(body)
    except msgspec.DecodeError:
        req = _MockRequest()
    if endpoint == "/embeddings":
        await ex.respond(200, _embeddings(req, model))
        return
    limit = req.max_completion_tokens or req.max_tokens or req.max_output_tokens
    n = max(1, min(opts.words, limit) if limit else opts.words)
    words = _text(n)
    prompt = max(1, len(body) // 4)
    ex.usage = Usage(prompt_tokens=prompt, completion_tokens=n, total_tokens=prompt + n)
    if opts.ttfb_ms:
        await asyncio.sleep(opts.ttfb_ms / 1000)
    rid = ex.request_id[4:]
    created = int(time.time())
    if not stream:
        if endpoint == "/responses":
            doc = _response_object(rid, created, model, "".join(words), prompt, n, "completed")
        elif endpoint == "/completions":
            doc = {"id": f"cmpl-{rid}", "object": "text_completion", "created": created, "model": model,
                   "choices": [{"text": "".join(words), "index": 0, "logprobs": None, "finish_reason": "length"
                                if limit and limit <= opts.words else "stop"}],
                   "usage": _usage(prompt, n)}
        else:
            doc = {"id": f"chatcmpl-{rid}", "object": "chat.completion", "created": created, "model": model,
                   "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(words),
                                                        "refusal": None, "annotations": []},
                                "logprobs": None,
                                "finish_reason": "length" if limit and limit <= opts.words else "stop"}],
                   "usage": _usage(prompt, n), "service_tier": "default", "system_fingerprint": "fp_fastgw_mock"}
        await ex.respond(200, _encode(doc))
        return
    headers = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache")]
    await ex.start(200, headers + ex.gateway_headers())
    events = (_responses_events(rid, created, model, words, prompt) if endpoint == "/responses"
              else _chat_events(rid, created, model, words, prompt, include_usage, limit is not None
                                and limit <= opts.words, legacy=endpoint == "/completions"))
    interval = opts.interval_ms / 1000
    first = True
    for event in events:
        if interval and not first:
            await asyncio.sleep(interval)
        first = False
        await ex.send({"type": "http.response.body", "body": event, "more_body": True})
    await ex.send({"type": "http.response.body", "body": b"", "more_body": False})


def _chat_events(rid: str, created: int, model: str, words: list[str], prompt: int,
                 include_usage: bool, truncated: bool, legacy: bool) -> list[bytes]:
    finish = "length" if truncated else "stop"
    usage_null = {"usage": None} if include_usage else {}
    out: list[bytes] = []
    if legacy:
        for i, w in enumerate(words):
            last = i == len(words) - 1
            doc = {"id": f"cmpl-{rid}", "object": "text_completion", "created": created, "model": model,
                   "choices": [{"text": w, "index": 0, "logprobs": None, "finish_reason": finish if last else None}],
                   **usage_null}
            out.append(b"data: " + _encode(doc) + b"\n\n")
    else:
        base = {"id": f"chatcmpl-{rid}", "object": "chat.completion.chunk", "created": created, "model": model,
                "service_tier": "default", "system_fingerprint": "fp_fastgw_mock"}
        deltas: list[tuple[dict[str, Any], str | None]] = [({"role": "assistant", "content": "", "refusal": None}, None)]
        deltas += [({"content": w}, None) for w in words]
        deltas.append(({}, finish))
        for delta, reason in deltas:
            doc = {**base, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": reason}],
                   **usage_null}
            out.append(b"data: " + _encode(doc) + b"\n\n")
    if include_usage:
        doc = {"id": f"{'cmpl' if legacy else 'chatcmpl'}-{rid}",
               "object": "text_completion" if legacy else "chat.completion.chunk",
               "created": created, "model": model, "choices": [], "usage": _usage(prompt, len(words))}
        out.append(b"data: " + _encode(doc) + b"\n\n")
    out.append(b"data: [DONE]\n\n")
    return out


def _response_object(rid: str, created: int, model: str, text: str, prompt: int, n: int,
                     status: str) -> dict[str, Any]:
    done = status == "completed"
    output = ([{"id": f"msg_{rid}", "type": "message", "status": "completed", "role": "assistant",
                "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]}]
              if done else [])
    return {"id": f"resp_{rid}", "object": "response", "created_at": created, "status": status,
            "error": None, "incomplete_details": None, "instructions": None, "max_output_tokens": None,
            "model": model, "output": output, "parallel_tool_calls": True, "previous_response_id": None,
            "reasoning": {"effort": None, "summary": None}, "store": False, "temperature": 1.0,
            "text": {"format": {"type": "text"}}, "tool_choice": "auto", "tools": [], "top_p": 1.0,
            "truncation": "disabled", "usage": {
                "input_tokens": prompt, "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": n, "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": prompt + n} if done else None,
            "user": None, "metadata": {}}


def _responses_events(rid: str, created: int, model: str, words: list[str], prompt: int) -> list[bytes]:
    seq = 0
    out: list[bytes] = []

    def ev(kind: str, **fields: Any) -> None:
        nonlocal seq
        out.append(b"event: " + kind.encode() + b"\ndata: " + _encode({"type": kind, "sequence_number": seq, **fields})
                   + b"\n\n")
        seq += 1

    text = "".join(words)
    item_id = f"msg_{rid}"
    ev("response.created", response=_response_object(rid, created, model, "", prompt, 0, "in_progress"))
    ev("response.in_progress", response=_response_object(rid, created, model, "", prompt, 0, "in_progress"))
    ev("response.output_item.added", output_index=0,
       item={"id": item_id, "type": "message", "status": "in_progress", "role": "assistant", "content": []})
    ev("response.content_part.added", item_id=item_id, output_index=0, content_index=0,
       part={"type": "output_text", "text": "", "annotations": [], "logprobs": []})
    for w in words:
        ev("response.output_text.delta", item_id=item_id, output_index=0, content_index=0, delta=w, logprobs=[])
    ev("response.output_text.done", item_id=item_id, output_index=0, content_index=0, text=text, logprobs=[])
    ev("response.content_part.done", item_id=item_id, output_index=0, content_index=0,
       part={"type": "output_text", "text": text, "annotations": [], "logprobs": []})
    ev("response.output_item.done", output_index=0,
       item={"id": item_id, "type": "message", "status": "completed", "role": "assistant",
             "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]})
    ev("response.completed", response=_response_object(rid, created, model, text, prompt, len(words), "completed"))
    return out


def _embeddings(req: _MockRequest, model: str) -> bytes:
    inputs = req.input if isinstance(req.input, list) else [req.input or ""]
    dims = req.dimensions or 8
    data = []
    for i, item in enumerate(inputs):
        seed = sum(map(ord, str(item))) or 1
        vec = [((seed * (j + 7)) % 1000) / 1000 - 0.5 for j in range(dims)]
        emb: Any = vec
        if req.encoding_format == "base64":
            emb = base64.b64encode(struct.pack(f"<{dims}f", *vec)).decode()
        data.append({"object": "embedding", "index": i, "embedding": emb})
    tokens = sum(max(1, len(str(x)) // 4) for x in inputs)
    return _encode({"object": "list", "data": data, "model": model,
                    "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})
