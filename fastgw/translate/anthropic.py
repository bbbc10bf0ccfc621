"""Anthropic Messages <-> OpenAI chat completions.

Public API (the gateway core relies on these names):

* :func:`build_request` -- OpenAI request dict -> (``/v1/messages``, headers, body);
  documented in :mod:`fastgw.translate.anthropic_request`.
* :func:`translate_response` -- Messages JSON body -> ``chat.completion`` bytes.
* :class:`StreamTranslator` -- Messages SSE bytes -> ``chat.completion.chunk`` SSE.
* :func:`translate_error` -- Anthropic error body -> (client status, OpenAI envelope).

Response mapping:

* ``text`` blocks are concatenated into ``content`` (``null`` when the reply is
  only tool calls); ``tool_use`` blocks become ``tool_calls`` with the Anthropic id
  and ``json``-encoded ``input`` as ``arguments``; ``thinking`` text becomes
  ``reasoning_content``.  Non-streaming replies also carry ``thinking_blocks``
  (thinking text + ``signature``, and ``redacted_thinking`` ``data``) which
  :func:`build_request` accepts back on assistant messages, so thinking survives
  tool-use round trips.  Streams carry thinking text as ``reasoning_content`` deltas
  and, when a thinking block's ``signature_delta`` arrives, one delta with
  ``thinking_blocks: [{"type": "thinking", "thinking": <the block's whole text>,
  "signature": ...}]`` (a ``redacted_thinking`` block: ``thinking_blocks: [{"type":
  "redacted_thinking", "data": ...}]`` at its start), so a streaming client can send
  them back too.
* Server tools (``server_tool_use``, ``web_search_tool_result``,
  ``*_code_execution_tool_result`` ...) and ``redacted_thinking`` have no OpenAI
  equivalent: they are skipped (their ``input_json_delta`` included); text blocks
  around them are kept.  Citations are dropped.
* ``stop_reason``: ``end_turn`` / ``stop_sequence`` / ``pause_turn`` -> ``stop``,
  ``max_tokens`` / ``model_context_window_exceeded`` -> ``length``, ``tool_use`` ->
  ``tool_calls``, ``refusal`` -> ``content_filter``; anything else -> ``stop``.
* Usage convention: ``prompt_tokens = input_tokens + cache_read_input_tokens +
  cache_creation_input_tokens`` (Anthropic's ``input_tokens`` excludes both cache
  counts while OpenAI's ``prompt_tokens`` includes cached tokens);
  ``prompt_tokens_details.cached_tokens = cache_read_input_tokens``; cache writes are
  ordinary prompt tokens, also reported as ``prompt_tokens_details.cache_write_tokens``
  and ``.cache_creation_input_tokens``; ``completion_tokens = output_tokens`` and
  ``reasoning_tokens = output_tokens_details.thinking_tokens`` when Anthropic
  reports it (0 otherwise -- thinking is inside ``output_tokens`` either way).

Stream contract (:class:`StreamTranslator`): ``feed`` takes raw upstream bytes in
any split and returns ready-to-send OpenAI SSE bytes for the events they complete
(each source event is translated as soon as it is complete; ``ping`` and unknown
events are ignored).  ``message_start`` -> role chunk; text / thinking deltas ->
``content`` / ``reasoning_content`` deltas; ``tool_use`` start -> tool-call start
chunk (``index``, ``id``, ``type``, ``function.name``, ``arguments: ""``), every
non-empty ``input_json_delta`` -> an arguments delta, and ``"{}"`` at block stop for
a tool whose arguments were empty; ``message_delta`` -> the finish chunk;
``message_stop`` -> usage chunk (if ``include_usage``) and ``[DONE]``, after which
the translator is ``finished``.  ``close()`` ends a stream that stopped early the
same way (finish chunk first if needed; ``complete`` stays False so the caller can
tell).  An ``error`` event -> one ``data: {"error": {...}}`` event, ``finished``
set, ``error`` holds the error object, and nothing (no ``[DONE]``) follows.
"""

from __future__ import annotations

from typing import Any

import msgspec

from fastgw.tokens import Usage

from .anthropic_request import build_request
from .chunks import completion, completion_id, message, tool_call
from .errors import TranslationError, error_reply, provider_error
from .sse import SSEEvent, SSEParser
from .stream_base import ChatStream, sse_events

__all__ = [
    "StreamTranslator",
    "TranslationError",
    "build_request",
    "finish_reason",
    "response_usage",
    "translate_error",
    "translate_response",
    "usage_of",
]

_encode = msgspec.json.Encoder().encode
_decode_any = msgspec.json.Decoder().decode

_STOP_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

# Anthropic error type -> (client status, OpenAI error type)
_ERROR_TYPES: dict[str, tuple[int, str]] = {
    "invalid_request_error": (400, "invalid_request_error"),
    "authentication_error": (401, "authentication_error"),
    "billing_error": (402, "billing_error"),
    "permission_error": (403, "permission_error"),
    "not_found_error": (404, "not_found_error"),
    "request_too_large": (413, "invalid_request_error"),
    "rate_limit_error": (429, "rate_limit_error"),
    "api_error": (500, "server_error"),
    "timeout_error": (504, "timeout"),
    "overloaded_error": (503, "overloaded"),
}
_STATUS_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}


def finish_reason(stop_reason: str | None) -> str:
    """Anthropic ``stop_reason`` -> OpenAI ``finish_reason``."""
    return _STOP_REASONS.get(stop_reason or "", "stop")


def usage_of(u: dict[str, Any] | None, into: Usage | None = None) -> Usage:
    """Anthropic ``usage`` -> :class:`Usage` (fields absent from ``u`` keep ``into``'s values)."""
    usage = into if into is not None else Usage()
    if not u:
        return usage
    if "input_tokens" in u or "cache_read_input_tokens" in u or "cache_creation_input_tokens" in u:
        cache_read = int(u.get("cache_read_input_tokens") or 0)
        cache_write = int(u.get("cache_creation_input_tokens") or 0)
        usage.prompt_tokens = int(u.get("input_tokens") or 0) + cache_read + cache_write
        usage.cached_tokens = cache_read
        usage.cache_write_tokens = cache_write
    if "output_tokens" in u:
        usage.completion_tokens = int(u.get("output_tokens") or 0)
    details = u.get("output_tokens_details")
    if isinstance(details, dict) and "thinking_tokens" in details:
        usage.reasoning_tokens = int(details.get("thinking_tokens") or 0)
    usage.total_tokens = usage.prompt_tokens + usage.completion_tokens
    return usage


class _UsageOnly(msgspec.Struct):
    usage: dict[str, Any] | None = None


_decode_usage_only = msgspec.json.Decoder(_UsageOnly).decode


def response_usage(data: bytes) -> Usage:
    """The :class:`Usage` of a Messages API JSON body (zeros when it has none)."""
    return usage_of(_decode_usage_only(data).usage)


def translate_response(data: bytes, *, model: str) -> bytes:
    """A Messages API JSON body -> OpenAI ``chat.completion`` JSON bytes."""
    body = _decode_any(data)
    if not isinstance(body, dict):
        raise ValueError("Anthropic response body is not a JSON object")
    texts: list[str] = []
    thinking: list[str] = []
    thinking_blocks: list[dict[str, Any]] = []
    calls: list[dict[str, Any]] = []
    for block in body.get("content") or ():
        kind = block.get("type")
        if kind == "text":
            texts.append(block.get("text") or "")
        elif kind == "tool_use":
            calls.append(
                tool_call(
                    block.get("id") or "", block.get("name") or "", _encode(block.get("input") or {}).decode()
                )
            )
        elif kind == "thinking":
            thinking.append(block.get("thinking") or "")
            thinking_blocks.append(
                {
                    "type": "thinking",
                    "thinking": block.get("thinking") or "",
                    "signature": block.get("signature") or "",
                }
            )
        elif kind == "redacted_thinking":
            thinking_blocks.append({"type": "redacted_thinking", "data": block.get("data") or ""})
    text = "".join(texts)
    msg = message(
        None if calls and not text else text,
        tool_calls=calls,
        reasoning="".join(thinking) or None,
        extra={"thinking_blocks": thinking_blocks} if thinking_blocks else None,
    )
    choice = {
        "index": 0,
        "message": msg,
        "logprobs": None,
        "finish_reason": finish_reason(body.get("stop_reason")),
    }
    return completion(
        id=completion_id(body.get("id")), model=model, choices=[choice], usage=usage_of(body.get("usage"))
    )


def _error_mapping(status: int, err_type: str | None) -> tuple[int, str]:
    if err_type in _ERROR_TYPES:
        return _ERROR_TYPES[err_type]
    if status == 529:
        return 503, "overloaded"
    if status in _STATUS_TYPES:
        return status, _STATUS_TYPES[status]
    if status >= 500:
        return status, "server_error"
    return status, "invalid_request_error"


def _error_from(status: int, payload: Any) -> tuple[int, dict[str, Any]]:
    """An Anthropic error body (decoded, or None) -> (client status, OpenAI error object)."""
    err = payload.get("error") if isinstance(payload, dict) else None
    err_type = err.get("type") if isinstance(err, dict) else None
    message_text = err.get("message") if isinstance(err, dict) else None
    client_status, openai_type = _error_mapping(status, err_type if isinstance(err_type, str) else None)
    if not isinstance(message_text, str) or not message_text:
        message_text = f"Upstream provider returned HTTP {status}."
    code = err_type if isinstance(err_type, str) else None
    return client_status, provider_error(message_text, openai_type, code)


def translate_error(status: int, data: bytes) -> tuple[int, bytes]:
    """Anthropic error body (any bytes) -> (status for the client, OpenAI error envelope).

    529 / ``overloaded_error`` -> 503 ``overloaded``; ``rate_limit_error`` -> 429;
    ``invalid_request_error`` -> 400; auth -> 401; permission -> 403; not found ->
    404; ``api_error`` -> 500 ``server_error``.  ``code`` is Anthropic's error type.
    """
    return error_reply(status, data, _error_from)


class _Delta(msgspec.Struct):
    type: str | None = None
    text: str | None = None
    thinking: str | None = None
    signature: str | None = None
    partial_json: str | None = None
    stop_reason: str | None = None


class _Event(msgspec.Struct):
    type: str = ""
    index: int = 0
    delta: _Delta | None = None
    content_block: dict[str, Any] | None = None
    message: dict[str, Any] | None = None
    usage: dict[str, Any] | None = None
    error: dict[str, Any] | None = None


_decode_event = msgspec.json.Decoder(_Event).decode

_TEXT, _THINKING, _TOOL, _SKIP = 0, 1, 2, 3


class StreamTranslator(ChatStream[SSEEvent]):
    """Anthropic Messages SSE -> OpenAI chat chunk SSE; see the module docstring."""

    def __init__(self, *, model: str, include_usage: bool) -> None:
        super().__init__(model=model, include_usage=include_usage)
        self._parser = SSEParser()
        self.finish_reason: str | None = None
        self._started = False
        self._blocks: dict[int, tuple[int, int]] = {}  # block index -> (kind, tool call index)
        self._args_sent: dict[int, bool] = {}  # tool call index -> non-empty arguments sent
        self._thinking: dict[int, list[str]] = {}  # thinking block index -> its text so far
        self._tools = 0

    def _payloads(self, data: bytes, closing: bool) -> list[SSEEvent]:
        return sse_events(self._parser, data, closing)

    def _start(self, out: list[bytes]) -> None:
        if not self._started:
            self._started = True
            out.append(self._writer.role())

    def _end(self, out: list[bytes]) -> None:
        self._start(out)
        if self.finish_reason is None:
            self.finish_reason = "tool_calls" if self._tools else "stop"
            out.append(self._writer.finish(self.finish_reason))
        self._done(out)

    def _handle(self, event: SSEEvent, out: list[bytes]) -> None:
        name, data = event.event, event.data
        try:
            ev = _decode_event(data)
        except msgspec.ValidationError:
            ev = None
        except msgspec.DecodeError:
            if name == "ping":
                return
            self._fail({"type": "api_error", "message": "Malformed event from upstream provider."}, out)
            return
        if ev is None:  # valid JSON of an unexpected shape: only errors matter
            payload = _decode_any(data)
            if isinstance(payload, dict) and (payload.get("type") == "error" or name == "error"):
                self._fail(payload.get("error"), out)
            return
        kind = ev.type or name or ""
        if kind == "content_block_delta":
            self._delta(ev, out)
        elif kind == "content_block_start":
            self._block_start(ev, out)
        elif kind == "content_block_stop":
            self._block_stop(ev, out)
        elif kind == "message_start":
            msg = ev.message or {}
            self._writer.set_id(msg.get("id"))
            usage_of(msg.get("usage"), self.usage)
            self._start(out)
        elif kind == "message_delta":
            usage_of(ev.usage, self.usage)
            reason = ev.delta.stop_reason if ev.delta else None
            if reason is not None and self.finish_reason is None:
                self._start(out)
                self.finish_reason = finish_reason(reason)
                out.append(self._writer.finish(self.finish_reason))
        elif kind == "message_stop":
            self.complete = True
            self._end(out)
        elif kind == "error":
            self._fail(ev.error, out)

    def _error(self, err: Any) -> dict[str, Any]:
        return _error_from(500, {"error": err})[1]

    def _block_start(self, ev: _Event, out: list[bytes]) -> None:
        block = ev.content_block or {}
        kind = block.get("type")
        self._start(out)
        if kind == "text":
            self._blocks[ev.index] = (_TEXT, 0)
            if block.get("text"):
                out.append(self._writer.content(block["text"]))
        elif kind == "thinking":
            self._blocks[ev.index] = (_THINKING, 0)
            self._thinking[ev.index] = [block.get("thinking") or ""]
            if block.get("thinking"):
                out.append(self._writer.reasoning(block["thinking"]))
        elif kind == "redacted_thinking":
            self._blocks[ev.index] = (_SKIP, 0)
            if block.get("data"):
                out.append(self._writer.delta({"thinking_blocks": [{"type": "redacted_thinking",
                                                                    "data": block["data"]}]}))
        elif kind == "tool_use":
            tc = self._tools
            self._tools += 1
            self._blocks[ev.index] = (_TOOL, tc)
            self._args_sent[tc] = False
            out.append(self._writer.tool_start(tc, block.get("id") or "", block.get("name") or ""))
        else:  # server_tool_use, *_tool_result, unknown
            self._blocks[ev.index] = (_SKIP, 0)

    def _delta(self, ev: _Event, out: list[bytes]) -> None:
        delta = ev.delta
        if delta is None:
            return
        kind, tc = self._blocks.get(ev.index, (_SKIP, 0))
        if delta.type == "text_delta":
            if delta.text and kind == _TEXT:
                self._start(out)
                out.append(self._writer.content(delta.text))
        elif delta.type == "thinking_delta":
            if delta.thinking:
                self._start(out)
                self._thinking.setdefault(ev.index, []).append(delta.thinking)
                out.append(self._writer.reasoning(delta.thinking))
        elif delta.type == "signature_delta" and delta.signature:
            text = "".join(self._thinking.pop(ev.index, ()))
            block = {"type": "thinking", "thinking": text, "signature": delta.signature}
            out.append(self._writer.delta({"thinking_blocks": [block]}))
        elif delta.type == "input_json_delta" and delta.partial_json and kind == _TOOL:
            self._args_sent[tc] = True
            out.append(self._writer.tool_args(tc, delta.partial_json))
        # citations_delta and unknown deltas carry nothing for OpenAI

    def _block_stop(self, ev: _Event, out: list[bytes]) -> None:
        kind, tc = self._blocks.get(ev.index, (_SKIP, 0))
        if kind == _TOOL and not self._args_sent.get(tc):
            self._args_sent[tc] = True
            out.append(self._writer.tool_args(tc, "{}"))
