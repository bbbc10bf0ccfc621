"""Provider wire formats: the one place that writes them, for the mock upstream and the tests.

The mock upstream's builders (:func:`openai_chat`, :func:`openai_responses`,
:func:`openai_embeddings`, :func:`anthropic_messages`, :func:`gemini_generate`,
:func:`error_reply`) return a :class:`Reply`, encoded once per knob combination: either a
complete JSON body, or a stream split into prefix events, one event per content chunk, and suffix
events (already SSE-framed bytes).

The scripted builders replay a list of steps (text, thinking, tool calls) in a provider's exact
bytes, for the translation tests and their test upstream: :func:`anthropic_json` /
:func:`anthropic_sse` (``message_start`` ... ``message_stop``, with ``ping`` and Anthropic's
padded ``data:`` lines), :func:`gemini_json` / :func:`gemini_sse` (``data: ...\\r\\n\\r\\n``
framing, cumulative ``usageMetadata``), :func:`anthropic_error`, :func:`anthropic_error_event`
(a mid-stream ``event: error``) and :func:`gemini_error`. The mock's Anthropic and Gemini replies
are built from them.

The shapes follow the providers' documented formats and the recordings in the conformance corpus:
OpenAI chat completions (JSON and ``data:`` chunks ending in ``data: [DONE]``), the Responses API
(``event:``/``data:`` pairs), embeddings, Anthropic Messages and Gemini generateContent /
streamGenerateContent?alt=sse.
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


# ---------------------------------------------------------------- scripted replies
# A *script* is a list of steps: ``("text", "Hello")`` (assistant text), ``("thinking", "Let me
# think")`` (reasoning text), ``("tool", "get_weather", {"city": "Paris"})`` (a function call; an
# id may follow as a 4th element). A text or thinking step's value may also be a list of strings:
# its pieces, one stream delta (Anthropic) or chunk (Gemini) each, instead of cutting it every
# ``piece`` characters.
Step = tuple[Any, ...]


def _full(value: str | list[str]) -> str:
    return value if isinstance(value, str) else "".join(value)


def _pieces(value: str | list[str], size: int) -> list[str]:
    if not isinstance(value, str):
        return list(value) or [""]
    return [value[i : i + size] for i in range(0, len(value), size)] or [""]


def _tool_id(step: Step, n: int) -> str:
    return str(step[3]) if len(step) > 3 else f"toolu_{n:024d}"


def _stop_reason(script: list[Step], stop_reason: str | None) -> str:
    return stop_reason or ("tool_use" if any(s[0] == "tool" for s in script) else "end_turn")


# ---------------------------------------------------------------- OpenAI chat, scripted
def openai_chat_json(
    script: list[Step],
    *,
    model: str = "gpt-test",
    finish_reason: str | None = None,
    usage: dict[str, Any] | None = None,
    chat_id: str = "chatcmpl-test",
) -> bytes:
    """A ``chat.completion`` body for a script (thinking as ``reasoning_content``)."""
    text = "".join(_full(s[1]) for s in script if s[0] == "text")
    reasoning = "".join(_full(s[1]) for s in script if s[0] == "thinking")
    calls = [{"id": _tool_id(s, n).replace("toolu_", "call_"), "type": "function",
              "function": {"name": s[1], "arguments": _c(s[2])}} for n, s in enumerate(script) if s[0] == "tool"]
    msg: dict[str, Any] = {"role": "assistant", "content": text or None, "refusal": None}
    if reasoning:
        msg["reasoning_content"] = reasoning
    if calls:
        msg["tool_calls"] = calls
    body = {
        "id": chat_id,
        "object": "chat.completion",
        "created": CREATED,
        "model": model,
        "choices": [{"index": 0, "message": msg, "logprobs": None,
                     "finish_reason": finish_reason or ("tool_calls" if calls else "stop")}],
        "usage": usage or _usage_openai(10, 5),
    }
    return _c(body).encode()


def openai_chat_sse_events(
    script: list[Step],
    *,
    model: str = "gpt-test",
    finish_reason: str | None = None,
    usage: dict[str, Any] | None = None,
    chat_id: str = "chatcmpl-test",
    piece: int = 4,
    include_usage: bool = True,
) -> list[bytes]:
    """A chat chunk stream for a script, one item per ``data:`` event: role chunk, content /
    ``reasoning_content`` pieces, each tool call's start (id, name, ``""``) then argument pieces,
    the finish chunk, the usage chunk (``include_usage``), ``[DONE]``."""

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        c: dict[str, Any] = {"id": chat_id, "object": "chat.completion.chunk", "created": CREATED, "model": model,
                             "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
        if include_usage:
            c["usage"] = None
        return _sse(c)

    out = [chunk({"role": "assistant", "content": "", "refusal": None})]
    tools = 0
    for n, step in enumerate(script):
        if step[0] in ("text", "thinking"):
            key = "content" if step[0] == "text" else "reasoning_content"
            out += [chunk({key: p}) for p in _pieces(step[1], piece)]
        else:
            tc = {"index": tools, "id": _tool_id(step, n).replace("toolu_", "call_"), "type": "function",
                  "function": {"name": step[1], "arguments": ""}}
            out.append(chunk({"tool_calls": [tc]}))
            args = _c(step[2]) if step[2] else ""
            out += [chunk({"tool_calls": [{"index": tools, "function": {"arguments": p}}]})
                    for p in _pieces(args, piece) if p]
            tools += 1
    out.append(chunk({}, finish_reason or ("tool_calls" if tools else "stop")))
    if include_usage:
        u = {"id": chat_id, "object": "chat.completion.chunk", "created": CREATED, "model": model, "choices": [],
             "usage": usage or _usage_openai(10, 5)}
        out.append(_sse(u))
    out.append(b"data: [DONE]\n\n")
    return out


def openai_chat_sse(script: list[Step], **kw: Any) -> bytes:
    """:func:`openai_chat_sse_events` as one body."""
    return b"".join(openai_chat_sse_events(script, **kw))


# ---------------------------------------------------------------- Anthropic Messages
def anthropic_json(
    script: list[Step],
    *,
    model: str = "claude-test",
    stop_reason: str | None = None,
    usage: dict[str, Any] | None = None,
    msg_id: str = "msg_test",
) -> bytes:
    """A Messages API response body."""
    content: list[dict[str, Any]] = []
    for n, step in enumerate(script):
        if step[0] == "text":
            content.append({"type": "text", "text": _full(step[1])})
        elif step[0] == "thinking":
            content.append({"type": "thinking", "thinking": _full(step[1]), "signature": "c2ln"})
        elif step[0] == "tool":
            content.append({"type": "tool_use", "id": _tool_id(step, n), "name": step[1], "input": step[2]})
    body = {
        "id": msg_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": _stop_reason(script, stop_reason),
        "stop_sequence": None,
        "usage": usage or {"input_tokens": 10, "output_tokens": 5},
    }
    return _c(body).encode()


def _anthropic_event(kind: str, payload: dict[str, Any], pad: int = 0) -> bytes:
    """One event; ``pad`` spaces before the closing brace, as Anthropic pads its ``data:`` lines."""
    data = _c(payload)
    if pad:
        data = data[:-1] + " " * pad + "}"
    return f"event: {kind}\ndata: {data}\n\n".encode()


_PING = b'event: ping\ndata: {"type": "ping"}\n\n'


def anthropic_sse_events(
    script: list[Step],
    *,
    model: str = "claude-test",
    stop_reason: str | None = None,
    input_usage: dict[str, Any] | None = None,
    output_tokens: int = 5,
    msg_id: str = "msg_test",
    piece: int = 4,
    end: bool = True,
) -> list[bytes]:
    """A Messages event stream, one item per event: ``message_start``, the first block's
    ``content_block_start``, ``ping`` (where Anthropic sends it), the blocks' deltas (text and
    tool input cut every ``piece`` characters), ``message_delta``, ``message_stop``.
    ``end=False`` stops after the content (a truncated stream)."""
    usage = dict(
        input_usage or {"input_tokens": 10, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
    )
    usage["output_tokens"] = 1
    start = {
        "type": "message_start",
        "message": {
            "id": msg_id,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": usage,
        },
    }
    out = [_anthropic_event("message_start", start, 3)]
    for n, step in enumerate(script):
        kind = step[0]
        if kind == "text":
            block: dict[str, Any] = {"type": "text", "text": ""}
            deltas = [{"type": "text_delta", "text": p} for p in _pieces(step[1], piece)]
        elif kind == "thinking":
            block = {"type": "thinking", "thinking": "", "signature": ""}
            deltas = [{"type": "thinking_delta", "thinking": p} for p in _pieces(step[1], piece)]
            deltas.append({"type": "signature_delta", "signature": "c2lnbmF0dXJl"})
        else:
            block = {"type": "tool_use", "id": _tool_id(step, n), "name": step[1], "input": {}}
            args = _c(step[2]) if step[2] else ""
            deltas = [{"type": "input_json_delta", "partial_json": ""}]
            deltas += [{"type": "input_json_delta", "partial_json": p} for p in _pieces(args, piece) if p]
        out.append(
            _anthropic_event(
                "content_block_start", {"type": "content_block_start", "index": n, "content_block": block}, 5
            )
        )
        if n == 0:
            out.append(_PING)
        for d in deltas:
            out.append(
                _anthropic_event("content_block_delta", {"type": "content_block_delta", "index": n, "delta": d}, 2)
            )
        out.append(_anthropic_event("content_block_stop", {"type": "content_block_stop", "index": n}, 1))
    if not script:
        out.append(_PING)
    if not end:
        return out
    final_usage = dict(usage)
    final_usage["output_tokens"] = output_tokens
    out.append(
        _anthropic_event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": _stop_reason(script, stop_reason), "stop_sequence": None},
                "usage": final_usage,
            },
        )
    )
    out.append(_anthropic_event("message_stop", {"type": "message_stop"}, 3))
    return out


def anthropic_sse(script: list[Step], **kw: Any) -> bytes:
    """:func:`anthropic_sse_events` as one body."""
    return b"".join(anthropic_sse_events(script, **kw))


def anthropic_error(err_type: str, message: str) -> bytes:
    """An error response body."""
    return _c({"type": "error", "error": {"type": err_type, "message": message}, "request_id": "req_test"}).encode()


def anthropic_error_event(err_type: str = "overloaded_error", message: str = "Overloaded") -> bytes:
    """A mid-stream ``event: error``."""
    return _anthropic_event(
        "error", {"type": "error", "error": {"details": None, "type": err_type, "message": message}}, 1
    )


def _split(events: list[bytes], is_content: Any) -> tuple[list[bytes], list[bytes], list[bytes]]:
    """(prefix, content, suffix): the events before the first content event, the content events
    (from the first to the last), and the rest."""
    idx = [i for i, e in enumerate(events) if is_content(e)]
    return events[: idx[0]], events[idx[0] : idx[-1] + 1], events[idx[-1] + 1 :]


def anthropic_messages(model: str, stream: bool, chunks: int, chunk_size: int) -> Reply:
    """The mock's Messages reply: one text block of ``chunks`` deltas."""
    script: list[Step] = [("text", chunk_texts(chunks, chunk_size))]
    mid = "msg_mock" + format(chunks * 1000 + chunk_size, "x")
    if not stream:
        usage = {"input_tokens": 12, "output_tokens": chunks}
        return Reply(body=anthropic_json(script, model=model, usage=usage, msg_id=mid))
    events = anthropic_sse_events(
        script, model=model, msg_id=mid, output_tokens=chunks,
        input_usage={"input_tokens": 12, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0},
    )
    prefix, content, suffix = _split(events, lambda e: e.startswith(b"event: content_block_delta\n"))
    return Reply(content_type=SSE_CT, prefix=prefix, content=content, suffix=suffix, stream=True)


# ---------------------------------------------------------------- Gemini
def _gemini_parts(script: list[Step]) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    for step in script:
        if step[0] == "text":
            parts.append({"text": _full(step[1])})
        elif step[0] == "thinking":
            parts.append({"text": _full(step[1]), "thought": True})
        elif step[0] == "tool":
            call: dict[str, Any] = {"name": step[1], "args": step[2]}
            if len(step) > 3:
                call["id"] = step[3]
            parts.append({"functionCall": call})
    return parts


def _gemini_usage(prompt: int, candidates: int | None, thoughts: int | None) -> dict[str, Any]:
    usage: dict[str, Any] = {"promptTokenCount": prompt}
    total = prompt
    if candidates is not None:
        usage["candidatesTokenCount"] = candidates
        total += candidates
    if thoughts:
        usage["thoughtsTokenCount"] = thoughts
        total += thoughts
    usage["totalTokenCount"] = total
    return usage


def gemini_json(
    script: list[Step],
    *,
    model: str = "gemini-test",
    finish_reason: str = "STOP",
    prompt_tokens: int = 10,
    candidates_tokens: int = 5,
    thoughts_tokens: int | None = None,
    response_id: str = "resp_test",
) -> bytes:
    """A ``GenerateContentResponse`` body."""
    body = {
        "candidates": [
            {
                "content": {"parts": _gemini_parts(script), "role": "model"},
                "finishReason": finish_reason,
                "index": 0,
            }
        ],
        "usageMetadata": _gemini_usage(prompt_tokens, candidates_tokens, thoughts_tokens),
        "modelVersion": model,
        "responseId": response_id,
    }
    return _c(body).encode()


def gemini_sse_events(
    script: list[Step],
    *,
    model: str = "gemini-test",
    finish_reason: str | None = "STOP",
    prompt_tokens: int = 10,
    candidates_tokens: int = 5,
    thoughts_tokens: int | None = None,
    response_id: str = "resp_test",
    piece: int = 8,
) -> list[bytes]:
    """A ``streamGenerateContent?alt=sse`` stream, one item per ``data: ...\\r\\n\\r\\n`` event:
    one chunk per text piece / function call, cumulative ``usageMetadata`` on every chunk, the
    candidates count and ``finishReason`` on the last."""
    chunks: list[list[dict[str, Any]]] = []
    for step in script:
        if step[0] in ("text", "thinking"):
            for p in _pieces(step[1], piece):
                chunks.append(_gemini_parts([(step[0], p)]))
        else:
            chunks.append(_gemini_parts([step]))
    if not chunks:
        chunks.append([{"text": ""}])
    out = []
    for i, parts in enumerate(chunks):
        last = i == len(chunks) - 1
        cand: dict[str, Any] = {"content": {"parts": parts, "role": "model"}, "index": 0}
        if last and finish_reason:
            cand["finishReason"] = finish_reason
        body = {
            "candidates": [cand],
            "usageMetadata": _gemini_usage(prompt_tokens, candidates_tokens if last else None, thoughts_tokens),
            "modelVersion": model,
            "responseId": response_id,
        }
        out.append(b"data: " + _c(body).encode() + b"\r\n\r\n")
    return out


def gemini_sse(script: list[Step], **kw: Any) -> bytes:
    """:func:`gemini_sse_events` as one body."""
    return b"".join(gemini_sse_events(script, **kw))


def gemini_error(code: int, status: str, message: str) -> bytes:
    """An error response body."""
    return _c({"error": {"code": code, "message": message, "status": status}}).encode()


def gemini_generate(model: str, stream: bool, chunks: int, chunk_size: int) -> Reply:
    """The mock's Gemini reply: ``chunks`` text chunks."""
    script: list[Step] = [("text", chunk_texts(chunks, chunk_size))]
    kw: dict[str, Any] = {"model": model, "prompt_tokens": 12, "candidates_tokens": chunks, "response_id": "mockResp01"}
    if not stream:
        return Reply(body=gemini_json(script, **kw))
    return Reply(content_type=b"text/event-stream", content=gemini_sse_events(script, **kw), stream=True)


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
    """A provider-shaped error (``kind`` = openai, anthropic or gemini) with HTTP ``status``."""
    msg = f"mock upstream injected error ({status})"
    if kind == "anthropic":
        return Reply(status=status, body=anthropic_error(_ANTH_ERR.get(status, "api_error"), msg))
    if kind == "gemini":
        return Reply(status=status, body=gemini_error(status, _GEM_ERR.get(status, "INTERNAL"), msg))
    etype, code = _OPENAI_ERR.get(status, ("server_error", None))
    body = {"error": {"message": msg, "type": etype, "param": None, "code": code}}
    return Reply(status=status, body=json.dumps(body, indent=2).encode())
