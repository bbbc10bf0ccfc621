"""OpenAI chat chunk SSE -> Anthropic Messages SSE (pure, incremental), for the ``/v1/messages``
front door in front of an OpenAI-compatible provider (and, chained after
:class:`fastgw.translate.gemini.StreamTranslator`, a Gemini one).

:class:`MessagesStream` ``(model=...)``: ``feed(chat_sse)`` takes the chunk stream in any
split and returns Anthropic events, each framed ``event: <type>\\ndata: <json>\\n\\n``, in
Anthropic's order:

* the first chunk -> ``message_start`` (``message`` with empty ``content``, ``stop_reason``
  null, zero usage: the chat stream reports usage only at its end) then ``ping``;
* ``reasoning_content`` (or ``reasoning``) deltas -> a ``thinking`` block
  (``content_block_start`` with ``thinking: ""`` and ``signature: ""``, then
  ``thinking_delta``\\ s); ``content`` (and ``refusal``: the stop reason is then ``refusal``)
  deltas -> a ``text`` block
  (``text_delta``\\ s); a tool call's first delta -> a ``tool_use`` block (``id``, ``name``,
  ``input: {}``) and each non-empty ``arguments`` piece -> an ``input_json_delta``.  Blocks
  are sequential: one opens when another kind of content starts, and the open one is closed
  (``content_block_stop``) first.  (An arguments piece for a tool call whose block was
  already closed -- interleaved parallel calls, which no known provider sends -- is dropped.)
* ``[DONE]`` (or ``close()``) -> the open block's ``content_block_stop``, ``message_delta``
  with ``stop_reason`` (from the ``finish_reason``, see
  :func:`fastgw.translate.messages.stop_reason`), ``stop_sequence: null`` and the usage of
  the chat stream's usage chunk (all four Anthropic counts, cumulative), then
  ``message_stop``.  ``complete`` says whether ``[DONE]`` arrived.
* a ``data: {"error": ...}`` chunk -> one ``event: error`` in Anthropic's envelope; the
  translator is then ``finished`` (no ``message_stop``) and ``error`` holds the error.

``usage`` is the chat stream's usage as :class:`fastgw.tokens.Usage`.
"""

from __future__ import annotations

import os
from typing import Any

import msgspec

from fastgw.tokens import Usage

from .messages import error_event, error_type, message_id, message_usage, stop_reason, usage_from_chat
from .sse import SSEEvent, SSEParser
from .stream_base import FeedLoop, sse_events

__all__ = ["MessagesStream"]

_encode = msgspec.json.Encoder().encode


class _Fn(msgspec.Struct):
    name: Any = None
    arguments: Any = None


class _ToolCall(msgspec.Struct):
    index: int = 0
    id: Any = None
    function: _Fn | None = None


class _Delta(msgspec.Struct):
    content: Any = None
    reasoning_content: Any = None
    reasoning: Any = None
    refusal: Any = None
    tool_calls: list[_ToolCall] | None = None


class _Choice(msgspec.Struct):
    index: int = 0
    delta: _Delta | None = None
    finish_reason: Any = None


class _Chunk(msgspec.Struct):
    id: Any = None
    choices: list[_Choice] | None = None
    usage: Any = None
    error: Any = None


_decode_chunk = msgspec.json.Decoder(_Chunk).decode

_TEXT, _THINKING, _TOOL = 1, 2, 3
_DELTA_HEAD = b'event: content_block_delta\ndata: {"type":"content_block_delta","index":'
_STOP_HEAD = b'event: content_block_stop\ndata: {"type":"content_block_stop","index":'
_PING = b'event: ping\ndata: {"type":"ping"}\n\n'
_ANTHROPIC_TYPES = frozenset({"invalid_request_error", "authentication_error", "permission_error",
                              "not_found_error", "rate_limit_error", "api_error", "overloaded_error"})
_MESSAGE_STOP = b'event: message_stop\ndata: {"type":"message_stop"}\n\n'


def _event(name: bytes, payload: dict[str, Any]) -> bytes:
    return b"event: " + name + b"\ndata: " + _encode(payload) + b"\n\n"


class MessagesStream(FeedLoop[SSEEvent]):
    """OpenAI chat chunk SSE -> Anthropic Messages SSE; see the module docstring."""

    def __init__(self, *, model: str) -> None:
        self.model = model
        self.usage = Usage()
        self.finished = False
        self.complete = False
        self.error: dict[str, Any] | None = None
        self._parser = SSEParser()
        self._started = False
        self._kind = 0  # the open block's kind (0: none open)
        self._index = -1  # the last block's index
        self._tools: dict[int, int] = {}  # chat tool-call index -> block index
        self._finish: str | None = None
        self._refused = False

    def _payloads(self, data: bytes, closing: bool) -> list[SSEEvent]:
        return sse_events(self._parser, data, closing)

    def _start(self, chat_id: Any, out: list[bytes]) -> None:
        self._started = True
        message = {"id": message_id(chat_id), "type": "message", "role": "assistant", "model": self.model,
                   "content": [], "stop_reason": None, "stop_sequence": None,
                   "usage": message_usage(Usage())}
        out.append(_event(b"message_start", {"type": "message_start", "message": message}))
        out.append(_PING)

    def _handle(self, event: SSEEvent, out: list[bytes]) -> None:
        data = event.data
        if data.strip() == "[DONE]":
            self.complete = True
            self._end(out)
            return
        try:
            chunk = _decode_chunk(data)
        except msgspec.DecodeError:
            self._fail({"type": "api_error", "message": "Malformed event from the upstream provider."}, out)
            return
        if chunk.error is not None:
            self._fail(chunk.error, out)
            return
        if not self._started:
            self._start(chunk.id, out)
        if chunk.usage:
            self.usage = usage_from_chat(chunk.usage)
        for choice in chunk.choices or ():
            if choice.index != 0:
                continue
            delta = choice.delta
            if delta is not None:
                self._delta(delta, out)
            if isinstance(choice.finish_reason, str) and choice.finish_reason:
                self._finish = choice.finish_reason

    def _delta(self, delta: _Delta, out: list[bytes]) -> None:
        reasoning = delta.reasoning_content if delta.reasoning_content is not None else delta.reasoning
        if isinstance(reasoning, str) and reasoning:
            self._open(_THINKING, {"type": "thinking", "thinking": "", "signature": ""}, out)
            out.append(self._delta_event({"type": "thinking_delta", "thinking": reasoning}))
        if isinstance(delta.refusal, str) and delta.refusal:
            self._refused = True
        for text in (delta.content, delta.refusal):
            if isinstance(text, str) and text:
                self._open(_TEXT, {"type": "text", "text": ""}, out)
                out.append(self._delta_event({"type": "text_delta", "text": text}))
        for tc in delta.tool_calls or ():
            fn = tc.function
            block = self._tools.get(tc.index)
            if block is None:
                call_id = tc.id if isinstance(tc.id, str) and tc.id else "toolu_" + os.urandom(12).hex()
                name = fn.name if fn is not None and isinstance(fn.name, str) else ""
                self._open(_TOOL, {"type": "tool_use", "id": call_id, "name": name, "input": {}}, out, True)
                block = self._tools[tc.index] = self._index
            args = fn.arguments if fn is not None else None
            if isinstance(args, str) and args and block == self._index and self._kind == _TOOL:
                out.append(self._delta_event({"type": "input_json_delta", "partial_json": args}))

    def _delta_event(self, delta: dict[str, Any]) -> bytes:
        return (_DELTA_HEAD + str(self._index).encode() + b',"delta":' + _encode(delta) + b"}\n\n")

    def _open(self, kind: int, block: dict[str, Any], out: list[bytes], new: bool = False) -> None:
        """Make a block of ``kind`` the open one (``new``: always a fresh block)."""
        if self._kind == kind and not new:
            return
        self._close_block(out)
        self._index += 1
        self._kind = kind
        out.append(_event(b"content_block_start",
                          {"type": "content_block_start", "index": self._index, "content_block": block}))

    def _close_block(self, out: list[bytes]) -> None:
        if self._kind:
            out.append(_STOP_HEAD + str(self._index).encode() + b"}\n\n")
            self._kind = 0

    def _end(self, out: list[bytes]) -> None:
        if not self._started:
            self._start(None, out)
        self._close_block(out)
        finish = self._finish or ("tool_calls" if self._tools else "stop")
        reason = "refusal" if self._refused and finish == "stop" else stop_reason(finish)
        delta = {"stop_reason": reason, "stop_sequence": None}
        out.append(_event(b"message_delta", {"type": "message_delta", "delta": delta,
                                             "usage": message_usage(self.usage)}))
        out.append(_MESSAGE_STOP)
        self.finished = True

    def _fail(self, err: Any, out: list[bytes]) -> None:
        if not isinstance(err, dict):
            err = {"message": str(err) if err else "The upstream provider failed."}
        openai_type = err.get("type") if isinstance(err.get("type"), str) else None
        kind = openai_type if openai_type in _ANTHROPIC_TYPES else error_type(500, openai_type)[1]
        message = str(err.get("message") or "The upstream provider failed.")
        self.error = {"type": kind, "message": message}
        out.append(error_event(kind, message))
        self.finished = True
