"""OpenAI chat completion answers and errors -> Anthropic Messages answers and errors (for the
``/v1/messages`` front door in front of a provider that does not speak Anthropic).

Contract (pure functions, no I/O):

* :func:`chat_to_message` -- a ``chat.completion`` JSON body -> (Anthropic ``message`` JSON
  bytes, :class:`~fastgw.tokens.Usage`).  Choice 0 only.  ``reasoning_content`` -> a
  ``thinking`` block first (``signature`` ``""``: the provider gave none), ``content`` ->
  one ``text`` block (a ``refusal`` alone -> its text, and ``stop_reason: refusal``), each
  tool call -> a ``tool_use`` block whose ``input`` is the decoded
  ``arguments`` object (``{}`` when they are empty or not an object).
* :func:`stop_reason` -- ``finish_reason`` -> ``stop_reason``: ``stop`` -> ``end_turn``,
  ``length`` -> ``max_tokens``, ``tool_calls`` / ``function_call`` -> ``tool_use``,
  ``content_filter`` -> ``refusal``; anything else -> ``end_turn``.
* :func:`message_usage` -- :class:`Usage` -> Anthropic ``usage``: ``input_tokens`` excludes
  cache reads and writes (``prompt_tokens - cached - cache writes``),
  ``cache_read_input_tokens`` = ``cached_tokens``, ``cache_creation_input_tokens`` = cache
  writes, ``output_tokens`` = ``completion_tokens`` (the inverse of
  :func:`fastgw.translate.anthropic.usage_of`).
* :func:`error_type` / :func:`error_body` / :func:`error_event` -- Anthropic's error
  envelope ``{"type":"error","error":{"type","message"}}`` and the status Anthropic uses:
  400 ``invalid_request_error``, 401 ``authentication_error``, 402 ``billing_error``, 403
  ``permission_error``, 404 ``not_found_error``, 413 ``request_too_large``, 429
  ``rate_limit_error``, 500/502 ``api_error``, 504 ``timeout_error``, and 503 or an
  ``overloaded`` error -> 529 ``overloaded_error``.
* :func:`from_openai_error` -- an OpenAI error envelope (what the provider translators and
  :func:`fastgw.upstream.call.error_body` produce) -> (status, Anthropic envelope).
"""

from __future__ import annotations

import os
from typing import Any

import msgspec

from fastgw.tokens import Usage

from .errors import scrub

__all__ = [
    "chat_to_message",
    "error_body",
    "error_event",
    "error_type",
    "from_openai_error",
    "message_id",
    "message_usage",
    "stop_reason",
    "usage_from_chat",
]

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode

_STOP = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}

_STATUS_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
OVERLOADED_STATUS = 529


def stop_reason(finish_reason: str | None) -> str:
    """OpenAI ``finish_reason`` -> Anthropic ``stop_reason``."""
    return _STOP.get(finish_reason or "", "end_turn")


def message_id(chat_id: Any) -> str:
    """``msg_<the provider's id>`` (a ``chatcmpl-`` prefix dropped), or ``msg_<random>``."""
    if isinstance(chat_id, str) and chat_id:
        return "msg_" + (chat_id[9:] if chat_id.startswith("chatcmpl-") else chat_id)
    return "msg_" + os.urandom(12).hex()


def message_usage(usage: Usage) -> dict[str, int]:
    """:class:`Usage` -> Anthropic ``usage`` (see the module docstring)."""
    cached = usage.cached_tokens
    written = usage.cache_write_tokens
    return {
        "input_tokens": max(0, usage.prompt_tokens - cached - written),
        "cache_creation_input_tokens": written,
        "cache_read_input_tokens": cached,
        "output_tokens": usage.completion_tokens,
    }


def usage_from_chat(u: Any) -> Usage:
    """An OpenAI chat ``usage`` object (decoded) -> :class:`Usage` (zeros when absent)."""
    if not isinstance(u, dict):
        return Usage()
    prompt = int(u.get("prompt_tokens") or 0)
    completion = int(u.get("completion_tokens") or 0)
    pd = u.get("prompt_tokens_details") if isinstance(u.get("prompt_tokens_details"), dict) else {}
    cd = u.get("completion_tokens_details") if isinstance(u.get("completion_tokens_details"), dict) else {}
    cached = int(pd.get("cached_tokens") or u.get("prompt_cache_hit_tokens") or 0)
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=int(u.get("total_tokens") or prompt + completion),
        cached_tokens=cached,
        reasoning_tokens=int(cd.get("reasoning_tokens") or 0),
        cache_write_tokens=int(pd.get("cache_write_tokens") or 0),
    )


def tool_input(arguments: Any) -> dict[str, Any]:
    """A tool call's ``arguments`` (JSON text) as the ``input`` object Anthropic clients expect."""
    if isinstance(arguments, dict):
        return arguments
    if isinstance(arguments, str) and arguments.strip():
        try:
            value = _decode(arguments)
        except msgspec.DecodeError:
            return {}
        if isinstance(value, dict):
            return value
    return {}


def chat_to_message(data: bytes, *, model: str) -> tuple[bytes, Usage]:
    """A ``chat.completion`` JSON body -> (Anthropic ``message`` JSON, usage)."""
    chat = _decode(data)
    if not isinstance(chat, dict):
        raise ValueError("chat completion body is not a JSON object")
    choices = chat.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], dict) else {}
    msg = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    reasoning = msg.get("reasoning_content") or msg.get("reasoning")
    if isinstance(reasoning, str) and reasoning:
        content.append({"type": "thinking", "thinking": reasoning, "signature": ""})
    text = msg.get("content")
    if isinstance(text, list):  # some servers answer with content parts
        text = "".join(str(p.get("text") or "") for p in text if isinstance(p, dict))
    if isinstance(text, str) and text:
        content.append({"type": "text", "text": text})
    refusal = msg.get("refusal")
    if isinstance(refusal, str) and refusal and not text:
        content.append({"type": "text", "text": refusal})
    for tc in msg.get("tool_calls") or ():
        fn = tc.get("function") or {}
        content.append({"type": "tool_use", "id": str(tc.get("id") or "toolu_" + os.urandom(12).hex()),
                        "name": str(fn.get("name") or ""), "input": tool_input(fn.get("arguments"))})
    usage = usage_from_chat(chat.get("usage"))
    finish = choice.get("finish_reason")
    if finish is None and msg.get("tool_calls"):
        finish = "tool_calls"
    reason = stop_reason(finish)
    if isinstance(refusal, str) and refusal and reason == "end_turn":
        reason = "refusal"
    body = {
        "id": message_id(chat.get("id")),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": reason,
        "stop_sequence": None,
        "usage": message_usage(usage),
    }
    return _encode(body), usage


# -- errors ------------------------------------------------------------------------------------


def error_type(status: int, openai_type: str | None = None) -> tuple[int, str]:
    """(status, Anthropic error type) for an error of ``status`` (and OpenAI-side ``type``)."""
    if status == 503 or openai_type == "overloaded" or status == OVERLOADED_STATUS:
        return OVERLOADED_STATUS, "overloaded_error"
    if openai_type == "timeout" or status == 504:
        return 504, "timeout_error"
    kind = _STATUS_TYPES.get(status)
    if kind is None:
        kind = "api_error" if status >= 500 else "invalid_request_error"
    return status, kind


def error_body(kind: str, message: str) -> bytes:
    """Anthropic's error envelope."""
    return _encode({"type": "error", "error": {"type": kind, "message": message}})


def error_event(kind: str, message: str) -> bytes:
    """The ``event: error`` that ends an Anthropic stream."""
    return b"event: error\ndata: " + error_body(kind, message) + b"\n\n"


def from_openai_error(status: int, data: bytes) -> tuple[int, bytes]:
    """An OpenAI error envelope (or any bytes) with ``status`` -> (status, Anthropic envelope)."""
    message = ""
    openai_type = None
    try:
        doc = _decode(data) if data else None
    except msgspec.DecodeError:
        doc = None
    err = doc.get("error") if isinstance(doc, dict) else None
    if isinstance(err, dict):
        message = str(err.get("message") or "")
        openai_type = err.get("type") if isinstance(err.get("type"), str) else None
    elif isinstance(err, str):
        message = err
    if not message:
        message = data.decode("utf-8", "replace").strip()[:1000] or f"HTTP {status} from the upstream provider."
    out_status, kind = error_type(status, openai_type)
    return out_status, error_body(kind, scrub(message))
