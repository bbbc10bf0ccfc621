"""Exact Anthropic / Gemini wire bytes for a scripted reply (for mock upstream servers).

A *script* is a list of steps:

* ``("text", "Hello")`` -- assistant text,
* ``("thinking", "Let me think")`` -- reasoning text,
* ``("tool", "get_weather", {"city": "Paris"})`` -- a function call (id optional as a
  4th element).

Functions:

* :func:`anthropic_json` / :func:`anthropic_sse` -- a Messages API body / event
  stream (``message_start`` ... ``message_stop``, with ``ping`` and Anthropic's
  padded ``data:`` lines; text and tool input split into several deltas).
* :func:`gemini_json` / :func:`gemini_sse` -- a ``GenerateContentResponse`` /
  ``streamGenerateContent?alt=sse`` stream (``data: ...\\r\\n\\r\\n`` framing,
  cumulative ``usageMetadata`` on every chunk, ``finishReason`` on the last).
* :func:`anthropic_error` / :func:`gemini_error` -- error bodies;
  :func:`anthropic_error_event` -- a mid-stream ``event: error``.

The shapes follow the providers' documented formats and the recordings in the
conformance corpus; they are written from scratch for fastgw's tests.
"""

from __future__ import annotations

import json
from typing import Any

Step = tuple[Any, ...]

_STOP = {"tool": "tool_use"}


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def _pieces(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def _tool_id(step: Step, n: int) -> str:
    return step[3] if len(step) > 3 else f"toolu_{n:024d}"


def anthropic_json(
    script: list[Step],
    *,
    model: str = "claude-test",
    stop_reason: str | None = None,
    usage: dict[str, Any] | None = None,
    msg_id: str = "msg_test",
) -> bytes:
    content: list[dict[str, Any]] = []
    for n, step in enumerate(script):
        if step[0] == "text":
            content.append({"type": "text", "text": step[1]})
        elif step[0] == "thinking":
            content.append({"type": "thinking", "thinking": step[1], "signature": "c2ln"})
        elif step[0] == "tool":
            content.append({"type": "tool_use", "id": _tool_id(step, n), "name": step[1], "input": step[2]})
    reason = stop_reason or ("tool_use" if any(s[0] == "tool" for s in script) else "end_turn")
    body = {
        "id": msg_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": reason,
        "stop_sequence": None,
        "usage": usage or {"input_tokens": 10, "output_tokens": 5},
    }
    return _dumps(body).encode()


def _event(kind: str, payload: dict[str, Any], pad: int = 0) -> str:
    data = _dumps(payload)
    if pad:
        data = data[:-1] + " " * pad + "}"
    return f"event: {kind}\ndata: {data}\n\n"


def anthropic_sse(
    script: list[Step],
    *,
    model: str = "claude-test",
    stop_reason: str | None = None,
    input_usage: dict[str, Any] | None = None,
    output_tokens: int = 5,
    msg_id: str = "msg_test",
    piece: int = 4,
    end: bool = True,
) -> bytes:
    """An event stream; ``end=False`` stops after the content (a truncated stream)."""
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
    out = [_event("message_start", start, 3), 'event: ping\ndata: {"type": "ping"}\n\n']
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
            args = _dumps(step[2]) if step[2] else ""
            deltas = [{"type": "input_json_delta", "partial_json": ""}]
            deltas += [{"type": "input_json_delta", "partial_json": p} for p in _pieces(args, piece) if p]
        out.append(
            _event(
                "content_block_start", {"type": "content_block_start", "index": n, "content_block": block}, 5
            )
        )
        for d in deltas:
            out.append(
                _event("content_block_delta", {"type": "content_block_delta", "index": n, "delta": d}, 2)
            )
        out.append(_event("content_block_stop", {"type": "content_block_stop", "index": n}, 1))
    if not end:
        return "".join(out).encode()
    reason = stop_reason or ("tool_use" if any(s[0] == "tool" for s in script) else "end_turn")
    final_usage = dict(usage)
    final_usage["output_tokens"] = output_tokens
    out.append(
        _event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": reason, "stop_sequence": None},
                "usage": final_usage,
            },
        )
    )
    out.append(_event("message_stop", {"type": "message_stop"}, 3))
    return "".join(out).encode()


def anthropic_error(err_type: str, message: str) -> bytes:
    return _dumps(
        {"type": "error", "error": {"type": err_type, "message": message}, "request_id": "req_test"}
    ).encode()


def anthropic_error_event(err_type: str = "overloaded_error", message: str = "Overloaded") -> bytes:
    return _event(
        "error", {"type": "error", "error": {"details": None, "type": err_type, "message": message}}, 1
    ).encode()


def _gemini_parts(script: list[Step]) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    for step in script:
        if step[0] == "text":
            parts.append({"text": step[1]})
        elif step[0] == "thinking":
            parts.append({"text": step[1], "thought": True})
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
    return _dumps(body).encode()


def gemini_sse(
    script: list[Step],
    *,
    model: str = "gemini-test",
    finish_reason: str | None = "STOP",
    prompt_tokens: int = 10,
    candidates_tokens: int = 5,
    thoughts_tokens: int | None = None,
    response_id: str = "resp_test",
    piece: int = 8,
) -> bytes:
    """One chunk per text piece / function call; the last chunk carries ``finishReason``."""
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
            "usageMetadata": _gemini_usage(
                prompt_tokens, candidates_tokens if last else None, thoughts_tokens
            ),
            "modelVersion": model,
            "responseId": response_id,
        }
        out.append("data: " + _dumps(body) + "\r\n\r\n")
    return "".join(out).encode()


def gemini_error(code: int, status: str, message: str) -> bytes:
    return _dumps({"error": {"code": code, "message": message, "status": status}}).encode()
