"""Builders for the OpenAI chat output shapes shared by every provider translator.

Contract:

* :func:`usage_json` renders a :class:`fastgw.tokens.Usage` as OpenAI's
  ``CompletionUsage`` (``prompt_tokens_details.cached_tokens``,
  ``completion_tokens_details.reasoning_tokens``, and, when non-zero,
  ``prompt_tokens_details.cache_write_tokens`` plus the Anthropic-named alias
  ``cache_creation_input_tokens``).
* :class:`ChunkWriter` renders ``chat.completion.chunk`` SSE events
  (``data: {...}\\n\\n``) for one stream: fixed ``id`` (``chatcmpl-<provider id>``
  or random), ``created`` and ``model``; each choice carries ``logprobs: null`` and
  ``finish_reason``; ``usage: null`` is present on every chunk when the client asked
  for ``include_usage`` (as OpenAI does), and the usage chunk has ``choices: []``.
* :func:`completion` renders a non-streaming ``chat.completion`` body.
* :func:`new_call_id` makes OpenAI-looking tool-call ids (``call_<24 hex>``).
"""

from __future__ import annotations

import os
import time
from typing import Any

import msgspec

from fastgw.tokens import Usage

__all__ = ["ChunkWriter", "completion", "completion_id", "message", "new_call_id", "tool_call", "usage_json"]

_enc = msgspec.json.Encoder()
encode = _enc.encode


def new_call_id() -> str:
    """A fresh OpenAI-style tool call id."""
    return "call_" + os.urandom(12).hex()


def completion_id(provider_id: str | None) -> str:
    """``chatcmpl-<provider id>``, or ``chatcmpl-<random>`` without one."""
    return "chatcmpl-" + (provider_id or os.urandom(12).hex())


def usage_json(usage: Usage) -> dict[str, Any]:
    """``usage`` as OpenAI's ``CompletionUsage`` object; see the module docstring."""
    prompt_details: dict[str, int] = {"cached_tokens": usage.cached_tokens}
    if usage.cache_write_tokens:
        prompt_details["cache_write_tokens"] = usage.cache_write_tokens
        prompt_details["cache_creation_input_tokens"] = usage.cache_write_tokens
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": prompt_details,
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
    }


class ChunkWriter:
    """Renders the ``chat.completion.chunk`` events of one stream.

    The envelope prefix is computed once (at the first chunk, so ``set_id`` may be
    called before it) and every chunk is ``prefix + choices JSON + suffix``.
    """

    __slots__ = ("_prefix", "_suffix", "created", "id", "include_usage", "model")

    def __init__(self, *, model: str, include_usage: bool) -> None:
        self.model = model
        self.include_usage = include_usage
        self.created = int(time.time())
        self.id: str | None = None
        self._prefix: bytes | None = None
        self._suffix = b',"usage":null}\n\n' if include_usage else b"}\n\n"

    def set_id(self, provider_id: str | None) -> None:
        """Use ``chatcmpl-<provider_id>`` as the id, unless a chunk was already written."""
        if self._prefix is None:
            self.id = completion_id(provider_id)

    def _head(self) -> bytes:
        if self._prefix is None:
            if self.id is None:
                self.id = completion_id(None)
            self._prefix = (
                b'data: {"id":'
                + encode(self.id)
                + b',"object":"chat.completion.chunk","created":'
                + str(self.created).encode()
                + b',"model":'
                + encode(self.model)
                + b',"choices":'
            )
        return self._prefix

    def delta(self, delta: dict[str, Any], index: int = 0, finish_reason: str | None = None) -> bytes:
        """One chunk with a single choice."""
        choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return self._head() + encode([choice]) + self._suffix

    def role(self, index: int = 0) -> bytes:
        return self.delta({"role": "assistant", "content": ""}, index)

    def content(self, text: str, index: int = 0) -> bytes:
        return self.delta({"content": text}, index)

    def reasoning(self, text: str, index: int = 0) -> bytes:
        return self.delta({"reasoning_content": text}, index)

    def tool_start(
        self, tc_index: int, call_id: str, name: str, arguments: str = "", index: int = 0
    ) -> bytes:
        tc = {
            "index": tc_index,
            "id": call_id,
            "type": "function",
            "function": {"name": name, "arguments": arguments},
        }
        return self.delta({"tool_calls": [tc]}, index)

    def tool_args(self, tc_index: int, arguments: str, index: int = 0) -> bytes:
        return self.delta({"tool_calls": [{"index": tc_index, "function": {"arguments": arguments}}]}, index)

    def finish(self, reason: str, index: int = 0) -> bytes:
        return self.delta({}, index, reason)

    def usage_chunk(self, usage: Usage) -> bytes:
        return self._head() + b'[],"usage":' + encode(usage_json(usage)) + b"}\n\n"


def completion(
    *,
    id: str,
    model: str,
    choices: list[dict[str, Any]],
    usage: Usage | None,
    created: int | None = None,
) -> bytes:
    """A ``chat.completion`` body; ``choices`` are complete choice objects."""
    body: dict[str, Any] = {
        "id": id,
        "object": "chat.completion",
        "created": int(time.time()) if created is None else created,
        "model": model,
        "choices": choices,
    }
    if usage is not None:
        body["usage"] = usage_json(usage)
    return encode(body)


def message(
    content: str | None,
    *,
    tool_calls: list[dict[str, Any]] | None = None,
    reasoning: str | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """An assistant ``message`` object (``refusal`` always present, as the schema requires)."""
    msg: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None}
    if tool_calls:
        msg["tool_calls"] = tool_calls
    if reasoning:
        msg["reasoning_content"] = reasoning
    if extra:
        msg.update(extra)
    return msg


def tool_call(call_id: str, name: str, arguments: str) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
