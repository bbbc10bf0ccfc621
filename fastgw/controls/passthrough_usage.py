"""Usage on the raw passthrough (``/p/{provider}/...``): observe the provider's answer, never change it.

The passthrough relays bytes both ways without decoding the request, so which usage
format to look for is read off the answer: a JSON body (OpenAI chat/completions/
embeddings/Responses, Anthropic messages: :class:`~fastgw.controls.usage.BodyTap` decodes
only ``usage``), or an SSE stream chosen by the path: ``.../messages`` (Anthropic: input
tokens in ``message_start`` at the head, output tokens in the last ``message_delta``),
``.../responses`` (the terminal ``response.*`` event) or anything else (an OpenAI chat
stream's usage chunk, present when the client asked for it). Every tap here returns each
chunk object unchanged. The model is read lazily from the first bytes of the answer.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from fastgw.controls.usage import BodyTap, ResponsesUsageTap, StreamUsageTap, _payload, _split_events, _Tail
from fastgw.tokens import Usage
from fastgw.translate.anthropic import usage_of

HEAD_BYTES = 16384
_MODEL = re.compile(rb'"model"\s*:\s*"([^"\\]{1,200})"')


class _AnthropicEvent(msgspec.Struct):
    type: str = ""
    message: dict[str, Any] | None = None
    usage: dict[str, Any] | None = None


_dec_event = msgspec.json.Decoder(_AnthropicEvent)


class AnthropicStreamTap:
    """Observes an Anthropic Messages SSE stream: the head (``message_start``) and the tail."""

    strip = False
    stripped = 0

    def __init__(self) -> None:
        self._head: list[bytes] = []
        self._head_size = 0
        self._tail = _Tail(65536)
        self.closed = False

    def feed(self, chunk: bytes) -> bytes:
        if self._head_size < HEAD_BYTES:
            self._head.append(chunk)
            self._head_size += len(chunk)
        self._tail.add(chunk)
        return chunk

    def close(self) -> bytes:
        self.closed = True
        return b""

    def seen(self) -> tuple[bytes, int]:
        return self._tail.data(), self._tail.total

    @property
    def usage(self) -> Usage | None:
        found = False
        usage = Usage()
        for data in (b"".join(self._head), self._tail.data()):
            for event in _split_events(data):
                if b'"usage"' not in event:
                    continue
                try:
                    ev = _dec_event.decode(_payload(event))
                except (msgspec.DecodeError, msgspec.ValidationError):
                    continue
                raw = (ev.message or {}).get("usage") if ev.type == "message_start" else ev.usage
                if isinstance(raw, dict):
                    usage_of(raw, usage)
                    found = True
        return usage if found else None


class PassthroughTap:
    """The tap for one passthrough answer: usage (and the model) by what the answer is."""

    __slots__ = ("_first", "inner", "stream")

    def __init__(self, path: bytes, content_type: bytes) -> None:
        self.stream = content_type.startswith(b"text/event-stream")
        self.inner: Any
        if not self.stream:
            self.inner = BodyTap()
        elif path.rstrip(b"/").endswith(b"/messages"):
            self.inner = AnthropicStreamTap()
        elif path.rstrip(b"/").endswith(b"/responses"):
            self.inner = ResponsesUsageTap()
        else:
            self.inner = StreamUsageTap(strip_usage_chunk=False)
        self._first = b""

    def feed(self, chunk: bytes) -> bytes:
        if not self._first:
            self._first = chunk[:HEAD_BYTES]
        return self.inner.feed(chunk)

    def close(self) -> bytes:
        return self.inner.close()

    def seen(self) -> tuple[bytes, int]:
        seen = getattr(self.inner, "seen", None)
        return seen() if seen is not None else (b"", 0)

    @property
    def usage(self) -> Usage | None:
        return self.inner.usage

    @property
    def model(self) -> str | None:
        match = _MODEL.search(self._first)
        return match.group(1).decode("utf-8", "replace") if match else None
