"""Provider wire formats for the mock upstream, built once per knob combination.

Each builder returns a :class:`Reply`: either a complete JSON body, or a stream split into
prefix events, one event per content chunk, and suffix events (already SSE-framed bytes).
The shapes follow the providers' documented formats: OpenAI chat completions (JSON and
``data:`` chunks ending in ``data: [DONE]``), the Responses API (``event:``/``data:`` pairs),
embeddings, Anthropic Messages (message_start ... message_stop) and Gemini generateContent /
streamGenerateContent?alt=sse (``\\r\\n\\r\\n`` framing, as Gemini sends it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

CREATED = 1_731_000_000
FINGERPRINT = "fp_mock0001"
_TEXT = "The quick brown fox jumps over the lazy dog while the gateway streams tokens. "


@dataclass
class Reply:
    status: int = 200
    content_type: bytes = b"application/json"
    body: bytes = b""  # non-streaming body
    prefix: list[bytes] = field(default_factory=list)  # stream events before the content
    content: list[bytes] = field(default_factory=list)  # one event per content chunk
    suffix: list[bytes] = field(default_factory=list)  # events after the content
    stream: bool = False


def chunk_texts(chunks: int, chunk_size: int) -> list[str]:
    """``chunks`` pieces of ``chunk_size`` characters, cut from a repeating sentence."""
    n = len(_TEXT)
    out = []
    for i in range(chunks):
        start = (i * chunk_size) % n
        s = (_TEXT * (chunk_size // n + 2))[start : start + chunk_size]
        out.append(s)
    return out


def _c(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def _sse(obj: Any) -> bytes:
    return b"data: " + _c(obj).encode() + b"\n\n"


def _sse_event(name: str, obj: Any, raw: str | None = None) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + (raw or _c(obj)).encode() + b"\n\n"


SSE_CT = b"text/event-stream; charset=utf-8"


# ---------------------------------------------------------------- OpenAI chat completions
def _usage_openai(prompt: int, completion: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def openai_chat(model: str, stream: bool, include_usage: bool, chunks: int, chunk_size: int) -> Reply:
    texts = chunk_texts(chunks, chunk_size)
    cid = "chatcmpl-mock" + format(chunks * 1000 + chunk_size, "x")
    if not stream:
        body = {
            "id": cid,
            "object": "chat.completion",
            "created": CREATED,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": "".join(texts),
                        "refusal": None,
                        "annotations": [],
                    },
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": _usage_openai(12, chunks),
            "service_tier": "default",
            "system_fingerprint": FINGERPRINT,
        }
        return Reply(body=json.dumps(body, indent=2).encode())

    def chunk(delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
        c: dict[str, Any] = {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": CREATED,
            "model": model,
            "service_tier": "default",
            "system_fingerprint": FINGERPRINT,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if include_usage:
            c["usage"] = None
        return c

    prefix = [_sse(chunk({"role": "assistant", "content": "", "refusal": None}, None))]
    content = [_sse(chunk({"content": t}, None)) for t in texts]
    suffix = [_sse(chunk({}, "stop"))]
    if include_usage:
        u = chunk({}, None)
        u["choices"] = []
        u["usage"] = _usage_openai(12, chunks)
        suffix.append(_sse(u))
    suffix.append(b"data: [DONE]\n\n")
    return Reply(content_type=SSE_CT, prefix=prefix, content=content, suffix=suffix, stream=True)


# ---------------------------------------------------------------- OpenAI Responses API
def _response_obj(rid: str, model: str, status: str, output: list[Any], usage: Any) -> dict[str, Any]:
    return {
        "id": rid,
        "object": "response",
        "created_at": CREATED,
        "status": status,
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": None,
        "max_output_tokens": None,
        "model": model,
        "output": output,
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "reasoning": {"effort": None, "summary": None},
        "service_tier": "default",
        "store": True,
        "temperature": 1.0,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": usage,
        "user": None,
        "metadata": {},
    }


def openai_responses(model: str, stream: bool, chunks: int, chunk_size: int) -> Reply:
    texts = chunk_texts(chunks, chunk_size)
    full = "".join(texts)
    rid = "resp_mock" + format(chunks * 1000 + chunk_size, "x")
    mid = "msg_mock" + format(chunks * 1000 + chunk_size, "x")
    part_done = {"type": "output_text", "annotations": [], "logprobs": [], "text": full}
    item_done = {"id": mid, "type": "message", "status": "completed", "content": [part_done], "role": "assistant"}
    usage = {
        "input_tokens": 12,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": chunks,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 12 + chunks,
    }
    if not stream:
        return Reply(body=json.dumps(_response_obj(rid, model, "completed", [item_done], usage), indent=2).encode())
    seq = 0

    def ev(name: str, payload: dict[str, Any]) -> bytes:
        nonlocal seq
        obj = {"type": name, "sequence_number": seq, **payload}
        seq += 1
        return _sse_event(name, obj)

    running = _response_obj(rid, model, "in_progress", [], None)
    ids = {"item_id": mid, "output_index": 0, "content_index": 0}
    prefix = [
        ev("response.created", {"response": running}),
        ev("response.in_progress", {"response": running}),
        ev(
            "response.output_item.added",
            {"output_index": 0, "item": {"id": mid, "type": "message", "status": "in_progress", "content": [], "role": "assistant"}},
        ),
        ev(
            "response.content_part.added",
            {**ids, "part": {"type": "output_text", "annotations": [], "logprobs": [], "text": ""}},
        ),
    ]
    content = [ev("response.output_text.delta", {**ids, "delta": t, "logprobs": []}) for t in texts]
    suffix = [
        ev("response.output_text.done", {**ids, "text": full, "logprobs": []}),
        ev("response.content_part.done", {**ids, "part": part_done}),
        ev("response.output_item.done", {"output_index": 0, "item": item_done}),
        ev("response.completed", {"response": _response_obj(rid, model, "completed", [item_done], usage)}),
    ]
    return Reply(content_type=SSE_CT, prefix=prefix, content=content, suffix=suffix, stream=True)


# ---------------------------------------------------------------- OpenAI embeddings
def openai_embeddings(model: str, inputs: int, dims: int) -> Reply:
    vec = [round(((i * 7919) % 2000) / 1000.0 - 1.0, 6) for i in range(dims)]
    body = {
        "object": "list",
        "data": [{"object": "embedding", "index": i, "embedding": vec} for i in range(inputs)],
        "model": model,
        "usage": {"prompt_tokens": 8 * inputs, "total_tokens": 8 * inputs},
    }
    return Reply(body=json.dumps(body, indent=2).encode())


# ---------------------------------------------------------------- Anthropic Messages
def anthropic_messages(model: str, stream: bool, chunks: int, chunk_size: int) -> Reply:
    texts = chunk_texts(chunks, chunk_size)
    mid = "msg_mock" + format(chunks * 1000 + chunk_size, "x")
    if not stream:
        body = {
            "id": mid,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{"type": "text", "text": "".join(texts)}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": 12, "output_tokens": chunks},
        }
        return Reply(body=_c(body).encode())
    start = {
        "type": "message_start",
        "message": {
            "id": mid,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 12, "output_tokens": 1},
        },
    }
    prefix = [
        _sse_event("message_start", start),
        _sse_event("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        _sse_event("ping", None, raw='{"type": "ping"}'),
    ]
    content = [
        _sse_event("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": t}})
        for t in texts
    ]
    suffix = [
        _sse_event("content_block_stop", {"type": "content_block_stop", "index": 0}),
        _sse_event(
            "message_delta",
            {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None}, "usage": {"output_tokens": chunks}},
        ),
        _sse_event("message_stop", {"type": "message_stop"}),
    ]
    return Reply(content_type=b"text/event-stream; charset=utf-8", prefix=prefix, content=content, suffix=suffix, stream=True)


# ---------------------------------------------------------------- Gemini
def _gemini_chunk(model: str, text: str, finish: bool, out_tokens: int) -> dict[str, Any]:
    cand: dict[str, Any] = {"content": {"parts": [{"text": text}], "role": "model"}}
    if finish:
        cand["finishReason"] = "STOP"
    cand["index"] = 0
    usage: dict[str, Any] = {"promptTokenCount": 12, "totalTokenCount": 12 + out_tokens}
    if out_tokens:
        usage = {"promptTokenCount": 12, "candidatesTokenCount": out_tokens, "totalTokenCount": 12 + out_tokens}
    usage["promptTokensDetails"] = [{"modality": "TEXT", "tokenCount": 12}]
    return {"candidates": [cand], "usageMetadata": usage, "modelVersion": model, "responseId": "mockResp01"}


def gemini_generate(model: str, stream: bool, chunks: int, chunk_size: int) -> Reply:
    texts = chunk_texts(chunks, chunk_size)
    if not stream:
        return Reply(body=json.dumps(_gemini_chunk(model, "".join(texts), True, chunks), indent=2).encode())

    def frame(obj: Any) -> bytes:
        return b"data: " + json.dumps(obj, separators=(",", ": "), ensure_ascii=False).encode() + b"\r\n\r\n"

    content = [frame(_gemini_chunk(model, t, i == chunks - 1, i + 1 if i == chunks - 1 else 0)) for i, t in enumerate(texts)]
    return Reply(content_type=b"text/event-stream", content=content, stream=True)


# ---------------------------------------------------------------- errors
_OPENAI_ERR = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    429: ("requests", "rate_limit_exceeded"),
    500: ("server_error", None),
    502: ("server_error", None),
    503: ("server_error", None),
}
_ANTH_ERR = {400: "invalid_request_error", 401: "authentication_error", 429: "rate_limit_error", 529: "overloaded_error"}
_GEM_ERR = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 429: "RESOURCE_EXHAUSTED", 503: "UNAVAILABLE"}


def error_reply(kind: str, status: int) -> Reply:
    msg = f"mock upstream injected error ({status})"
    if kind == "anthropic":
        body: Any = {"type": "error", "error": {"type": _ANTH_ERR.get(status, "api_error"), "message": msg}}
        return Reply(status=status, body=_c(body).encode())
    if kind == "gemini":
        body = {"error": {"code": status, "message": msg, "status": _GEM_ERR.get(status, "INTERNAL")}}
        return Reply(status=status, body=json.dumps(body, indent=2).encode())
    etype, code = _OPENAI_ERR.get(status, ("server_error", None))
    body = {"error": {"message": msg, "type": etype, "param": None, "code": code}}
    return Reply(status=status, body=json.dumps(body, indent=2).encode())
