"""OpenAI chat chunk stream -> OpenAI Responses API event stream (pure, incremental).

:class:`ResponsesStreamTranslator` ``(model, *, request=None)``: ``feed(chat_sse)``
takes the ``chat.completion.chunk`` SSE bytes a provider translator produced (any
split, ``include_usage`` chunk and ``[DONE]`` included) and returns Responses
events, each framed ``event: <type>\\ndata: <json>\\n\\n`` with ``type`` and an
increasing ``sequence_number``:

* first chunk -> ``response.created`` then ``response.in_progress`` (status
  ``in_progress``, empty output);
* ``reasoning_content`` -> a ``reasoning`` item: ``response.output_item.added``,
  ``response.reasoning_text.delta``..., and at its end ``response.reasoning_text.done``
  and ``response.output_item.done``;
* ``content`` -> a ``message`` item: ``output_item.added``,
  ``response.content_part.added`` (``output_text``), ``response.output_text.delta``...,
  then ``response.output_text.done``, ``response.content_part.done``,
  ``output_item.done``;
* a tool-call start -> a ``function_call`` item (``call_id`` = chat id; ``name`` and
  ``namespace`` as the client declared the tool, see :mod:`fastgw.translate.responses_tools`):
  ``output_item.added``, ``response.function_call_arguments.delta``..., then
  ``response.function_call_arguments.done`` and ``output_item.done``.

An item ends when a different item starts or the choice finishes.  ``[DONE]`` (or
``close()``) -> ``response.completed`` with the whole output and usage, or
``response.incomplete`` when ``finish_reason`` was ``length`` / ``content_filter``.
A ``data: {"error": ...}`` chunk -> ``error`` then ``response.failed``; the
translator is then ``finished`` and ignores further input.  Only choice 0 is used.

:func:`response_object` and :func:`responses_usage` build the ``response`` object
and its ``usage`` for both the streaming and non-streaming paths.
"""

from __future__ import annotations

import os
import time
from typing import Any

import msgspec

from .responses_tools import namespace_names, tool_call_item_name
from .sse import SSEEvent, SSEParser
from .stream_base import FeedLoop, sse_events

__all__ = ["ResponsesStreamTranslator", "response_object", "responses_usage"]

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode

_INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}
_ECHO = ("max_output_tokens", "text", "reasoning", "user", "safety_identifier", "top_logprobs")


def responses_usage(usage: dict[str, Any] | None) -> dict[str, Any] | None:
    """Chat ``usage`` -> Responses ``usage`` (``None`` stays ``None``)."""
    if not usage:
        return None
    prompt = usage.get("prompt_tokens_details") or {}
    completion = usage.get("completion_tokens_details") or {}
    return {
        "input_tokens": int(usage.get("prompt_tokens") or 0),
        "input_tokens_details": {
            "cached_tokens": int(prompt.get("cached_tokens") or 0),
            "cache_write_tokens": int(prompt.get("cache_write_tokens") or 0),
        },
        "output_tokens": int(usage.get("completion_tokens") or 0),
        "output_tokens_details": {"reasoning_tokens": int(completion.get("reasoning_tokens") or 0)},
        "total_tokens": int(usage.get("total_tokens") or 0),
    }


def response_object(
    resp_id: str,
    created: int,
    model: str,
    output: list[dict[str, Any]],
    usage: dict[str, Any] | None,
    *,
    finish_reason: str | None = None,
    status: str | None = None,
    error: dict[str, Any] | None = None,
    request: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``response`` object (all fields the schema requires are present)."""
    request = request or {}
    reason = _INCOMPLETE.get(finish_reason or "")
    if status is None:
        status = "incomplete" if reason else "completed"
    body: dict[str, Any] = {
        "id": resp_id,
        "object": "response",
        "created_at": created,
        "status": status,
        "completed_at": int(time.time()) if status == "completed" else None,
        "error": error,
        "incomplete_details": {"reason": reason} if status == "incomplete" and reason else None,
        "model": model,
        "output": output,
        "parallel_tool_calls": request.get("parallel_tool_calls", True),
        "tool_choice": request.get("tool_choice", "auto"),
        "tools": [_echo_tool(t) for t in request.get("tools") or ()],
        "temperature": request.get("temperature"),
        "top_p": request.get("top_p"),
        "instructions": request.get("instructions"),
        "metadata": request.get("metadata") or {},
    }
    if usage is not None:
        body["usage"] = usage
    for key in _ECHO:
        if request.get(key) is not None:
            body[key] = request[key]
    return body


def _echo_tool(tool: Any) -> Any:
    """A request tool as the response object shows it (function tools list every field)."""
    if isinstance(tool, dict) and tool.get("type") == "function":
        return {
            "type": "function",
            "name": tool.get("name"),
            "description": tool.get("description"),
            "parameters": tool.get("parameters"),
            "strict": tool.get("strict"),
        }
    return tool


def _new_id(prefix: str) -> str:
    return prefix + os.urandom(16).hex()


class _Item:
    __slots__ = ("args", "call_id", "id", "kind", "name", "namespace", "open", "out_index", "text")

    def __init__(self, kind: str, out_index: int, prefix: str) -> None:
        self.kind = kind
        self.out_index = out_index
        self.id = _new_id(prefix)
        self.text = ""
        self.args = ""
        self.name = ""
        self.call_id = ""
        self.namespace: str | None = None
        self.open = True

    def final(self, status: str = "completed") -> dict[str, Any]:
        if self.kind == "message":
            part = {"type": "output_text", "text": self.text, "annotations": [], "logprobs": []}
            return {
                "type": "message",
                "id": self.id,
                "status": status,
                "role": "assistant",
                "content": [part],
            }
        if self.kind == "reasoning":
            content = [{"type": "reasoning_text", "text": self.text}]
            return {"type": "reasoning", "id": self.id, "summary": [], "content": content, "status": status}
        item = {
            "type": "function_call",
            "id": self.id,
            "call_id": self.call_id,
            "name": self.name,
            "arguments": self.args,
            "status": status,
        }
        if self.namespace is not None:
            item["namespace"] = self.namespace
        return item


class ResponsesStreamTranslator(FeedLoop[SSEEvent]):
    """Chat chunk SSE -> Responses event SSE; see the module docstring."""

    def __init__(self, model: str, *, request: dict[str, Any] | None = None) -> None:
        self.model = model
        self.request = request
        self._names = namespace_names(request)
        self.id = _new_id("resp_")
        self.created = int(time.time())
        self.finished = False
        self.usage: dict[str, Any] | None = None
        self.error: dict[str, Any] | None = None
        self.finish_reason: str | None = None
        self._parser = SSEParser()
        self._seq = 0
        self._started = False
        self._items: list[_Item] = []
        self._current: _Item | None = None
        self._tools: dict[int, _Item] = {}

    # -- internals ---------------------------------------------------------------

    def _payloads(self, data: bytes, closing: bool) -> list[SSEEvent]:
        return sse_events(self._parser, data, closing)

    def _handle(self, event: SSEEvent, out: list[bytes]) -> None:
        self._payload(event.data, out)

    def _end(self, out: list[bytes]) -> None:
        self._complete(out)

    def _emit(self, out: list[bytes], kind: str, fields: dict[str, Any]) -> None:
        payload = {"type": kind, "sequence_number": self._seq, **fields}
        self._seq += 1
        out.append(b"event: " + kind.encode() + b"\ndata: " + _encode(payload) + b"\n\n")

    def _response(self, status: str, error: dict[str, Any] | None = None) -> dict[str, Any]:
        output = [item.final("completed" if status == "completed" else "incomplete") for item in self._items]
        if status == "in_progress":
            output = []
        return response_object(
            self.id,
            self.created,
            self.model,
            output,
            responses_usage(self.usage) if status != "in_progress" else None,
            finish_reason=self.finish_reason,
            status=status,
            error=error,
            request=self.request,
        )

    def _start(self, out: list[bytes]) -> None:
        if not self._started:
            self._started = True
            self._emit(out, "response.created", {"response": self._response("in_progress")})
            self._emit(out, "response.in_progress", {"response": self._response("in_progress")})

    def _payload(self, data: str, out: list[bytes]) -> None:
        if data.strip() == "[DONE]":
            self._complete(out)
            return
        try:
            chunk = _decode(data)
        except msgspec.DecodeError:
            return
        if not isinstance(chunk, dict):
            return
        self._start(out)
        if "error" in chunk:
            self._fail(chunk["error"], out)
            return
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) == 0:
                self._delta(choice.get("delta") or {}, out)
                if choice.get("finish_reason"):
                    self.finish_reason = choice["finish_reason"]
                    self._close_current(out)

    def _open(self, kind: str, prefix: str, out: list[bytes]) -> _Item:
        self._close_current(out)
        item = _Item(kind, len(self._items), prefix)
        self._items.append(item)
        self._current = item
        added = item.final("in_progress")
        if kind == "message" or kind == "reasoning":
            added["content"] = []
        self._emit(out, "response.output_item.added", {"output_index": item.out_index, "item": added})
        if kind == "message":
            part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            self._emit(
                out,
                "response.content_part.added",
                {"item_id": item.id, "output_index": item.out_index, "content_index": 0, "part": part},
            )
        return item

    def _delta(self, delta: dict[str, Any], out: list[bytes]) -> None:
        reasoning = delta.get("reasoning_content")
        if reasoning:
            item = self._current if self._current and self._current.kind == "reasoning" else None
            item = item or self._open("reasoning", "rs_", out)
            item.text += reasoning
            self._emit(
                out,
                "response.reasoning_text.delta",
                {"item_id": item.id, "output_index": item.out_index, "content_index": 0, "delta": reasoning},
            )
        text = delta.get("content")
        if text:
            item = self._current if self._current and self._current.kind == "message" else None
            item = item or self._open("message", "msg_", out)
            item.text += text
            self._emit(
                out,
                "response.output_text.delta",
                {
                    "item_id": item.id,
                    "output_index": item.out_index,
                    "content_index": 0,
                    "delta": text,
                    "logprobs": [],
                },
            )
        for tc in delta.get("tool_calls") or ():
            fn = tc.get("function") or {}
            index = tc.get("index", 0)
            if tc.get("id") or index not in self._tools:
                self._close_current(out)
                item = _Item("function_call", len(self._items), "fc_")
                item.call_id = str(tc.get("id") or "")
                named = tool_call_item_name(self._names, str(fn.get("name") or ""))
                item.name = named["name"]
                item.namespace = named.get("namespace")
                self._items.append(item)
                self._tools[index] = self._current = item
                self._emit(
                    out,
                    "response.output_item.added",
                    {"output_index": item.out_index, "item": item.final("in_progress")},
                )
            item = self._tools[index]
            args = fn.get("arguments")
            if args:
                item.args += args
                if item.open:
                    self._emit(
                        out,
                        "response.function_call_arguments.delta",
                        {"item_id": item.id, "output_index": item.out_index, "delta": args},
                    )

    def _close_current(self, out: list[bytes]) -> None:
        item = self._current
        if item is None:
            return
        self._current = None
        item.open = False
        where = {"item_id": item.id, "output_index": item.out_index}
        if item.kind == "message":
            self._emit(
                out,
                "response.output_text.done",
                {**where, "content_index": 0, "text": item.text, "logprobs": []},
            )
            part = {"type": "output_text", "text": item.text, "annotations": [], "logprobs": []}
            self._emit(out, "response.content_part.done", {**where, "content_index": 0, "part": part})
        elif item.kind == "reasoning":
            self._emit(out, "response.reasoning_text.done", {**where, "content_index": 0, "text": item.text})
        else:
            self._emit(
                out,
                "response.function_call_arguments.done",
                {**where, "name": item.name, "arguments": item.args},
            )
        self._emit(out, "response.output_item.done", {"output_index": item.out_index, "item": item.final()})

    def _complete(self, out: list[bytes]) -> None:
        self._start(out)
        self._close_current(out)
        status = "incomplete" if self.finish_reason in _INCOMPLETE else "completed"
        kind = "response.incomplete" if status == "incomplete" else "response.completed"
        self._emit(out, kind, {"response": self._response(status)})
        self.finished = True

    def _fail(self, err: Any, out: list[bytes]) -> None:
        err = err if isinstance(err, dict) else {}
        message = str(err.get("message") or "Upstream provider error.")
        code = "rate_limit_exceeded" if err.get("type") == "rate_limit_error" else "server_error"
        self.error = {"code": code, "message": message}
        self._emit(
            out, "error", {"code": err.get("code") or code, "message": message, "param": err.get("param")}
        )
        self._emit(out, "response.failed", {"response": self._response("failed", self.error)})
        self.finished = True
