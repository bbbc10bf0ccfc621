"""Usage of a stream the client cancelled before the provider's usage arrived: an estimate.

Providers report usage at the end of a stream; a client that leaves first is still billed
for what was generated until then. :func:`estimate_stream_usage` works from what the
usage tap already holds -- the last ~64 KiB of the stream (references, no copies) and the
count of bytes seen -- only once, when the exchange is accounted, never per chunk:

* completion: the share of generated text in the tail's events (string values of
  ``content``, ``text``, ``delta``, ``arguments``, ``thinking``, ...), applied to every
  byte seen, at ~4 characters per token;
* prompt: the request body's size at ~4 bytes per token (an upper-leaning guess: JSON
  syntax and roles count too).

The record carries ``usage_estimated`` so nobody mistakes it for the provider's count.
"""

from __future__ import annotations

import math
from typing import Any

import msgspec

from fastgw.tokens import Usage

CHARS_PER_TOKEN = 4.0
_TEXT_KEYS = frozenset({"content", "text", "delta", "arguments", "partial_json", "thinking", "reasoning_content",
                        "reasoning", "refusal"})


def _text_chars(value: Any) -> int:
    if isinstance(value, dict):
        n = 0
        for key, item in value.items():
            n += len(item) if key in _TEXT_KEYS and isinstance(item, str) else _text_chars(item)
        return n
    if isinstance(value, list):
        return sum(_text_chars(item) for item in value)
    return 0


def _events(data: bytes) -> list[bytes]:
    return [line[5:].strip() for line in data.splitlines() if line.startswith(b"data:")]


def generated_chars(tail: bytes, total: int) -> int:
    """Characters of generated text in a stream of ``total`` bytes whose last bytes are ``tail``."""
    text = framed = 0
    for payload in _events(tail):
        try:
            doc = msgspec.json.decode(payload)
        except (msgspec.DecodeError, RecursionError, UnicodeDecodeError):
            continue  # [DONE], or the event the tail starts inside of
        text += _text_chars(doc)
        framed += len(payload) + 8
    if not framed:
        return 0
    return round(total * min(1.0, text / framed))


def estimate_stream_usage(tap: Any, request_bytes: int) -> Usage | None:
    """An estimate from a usage tap that saw part of a stream (None when it saw nothing).

    A tap that knows the prompt's size already (a translated stream whose provider sent
    it first) gives it as ``known_prompt_tokens``; it is used instead of the guess.
    """
    seen = getattr(tap, "seen", None)
    if seen is None:
        return None
    tail, total = seen()
    if not total:
        return None
    completion = math.ceil(generated_chars(tail, total) / CHARS_PER_TOKEN)
    prompt = getattr(tap, "known_prompt_tokens", 0) or math.ceil(request_bytes / CHARS_PER_TOKEN)
    return Usage(prompt, completion, prompt + completion, 0, 0)


class StreamSeen:
    """What a translated stream sent its client so far (the tail, by reference, and a byte
    count), for the estimate should the client leave before the provider's usage came."""

    __slots__ = ("_tail", "translator")

    def __init__(self, translator: Any) -> None:
        from fastgw.controls.usage import _Tail

        self._tail = _Tail(65536)
        self.translator = translator

    def add(self, out: bytes) -> None:
        self._tail.add(out)

    def seen(self) -> tuple[bytes, int]:
        return self._tail.data(), self._tail.total

    @property
    def usage(self) -> Usage | None:
        return None  # a finished stream's usage comes back from the translator itself

    @property
    def known_prompt_tokens(self) -> int:
        usage = getattr(self.translator, "usage", None)
        return int(getattr(usage, "prompt_tokens", 0) or 0)
