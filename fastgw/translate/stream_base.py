"""The feed/close loop shared by every incremental stream translator in this package.

:class:`FeedLoop` is the loop: ``feed(data)`` splits the bytes into payloads
(:meth:`~FeedLoop._payloads`), handles each one as soon as it is complete
(:meth:`~FeedLoop._handle`) and returns what they produced; ``close()`` handles a
last payload left unterminated and, unless a payload finished the stream, ends it
(:meth:`~FeedLoop._end`).  Once ``finished`` is set, input is ignored and nothing
more is produced. A payload the translator cannot make sense of (JSON of an
unexpected shape, bytes that are not UTF-8, nesting too deep) ends the stream
through :meth:`~FeedLoop._malformed` -- for :class:`ChatStream`, one error event --
instead of an exception escaping the loop.

:class:`ChatStream` adds what the provider stream translators (provider stream ->
OpenAI ``chat.completion.chunk`` SSE) have in common: the :class:`ChunkWriter`,
``usage``, ``complete`` and ``error``; :meth:`~ChatStream._done` ends a stream with
the usage chunk (when ``include_usage``) and ``[DONE]``, :meth:`~ChatStream._fail`
with one ``data: {"error": {...}}`` event and nothing after it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Generic, TypeVar

from fastgw.tokens import Usage

from .chunks import ChunkWriter
from .errors import envelope_of
from .sse import DONE, SSEEvent, SSEParser, encode_sse

__all__ = ["ChatStream", "FeedLoop", "sse_events"]

P = TypeVar("P")

# What a payload of an unexpected shape raises on its way through a translator.
MALFORMED = (ValueError, TypeError, AttributeError, KeyError, IndexError, RecursionError)


def sse_events(parser: SSEParser, data: bytes, closing: bool) -> list[SSEEvent]:
    """The events ``data`` completes, or the parser's last events when ``closing``."""
    return parser.close() if closing else parser.feed(data)


class FeedLoop(Generic[P]):
    """Bytes in any split -> output bytes, one payload of type ``P`` at a time."""

    finished: bool = False

    def feed(self, data: bytes) -> bytes:
        """The output for every payload ``data`` completes."""
        if self.finished:
            return b""
        out: list[bytes] = []
        try:
            for payload in self._payloads(data, False):
                self._handle(payload, out)
                if self.finished:
                    break
        except MALFORMED:
            self._malformed(out)
        return b"".join(out)

    def close(self) -> bytes:
        """End of input: the output of a last unterminated payload, then the stream's end."""
        if self.finished:
            return b""
        out: list[bytes] = []
        try:
            for payload in self._payloads(b"", True):
                self._handle(payload, out)
                if self.finished:
                    return b"".join(out)
            self._end(out)
        except MALFORMED:
            self._malformed(out)
        return b"".join(out)

    def _payloads(self, data: bytes, closing: bool) -> Iterable[P]:
        """The payloads ``data`` completes (``closing``: those the end of input completes)."""
        raise NotImplementedError

    def _handle(self, payload: P, out: list[bytes]) -> None:
        """Translate one payload, appending output to ``out``; may set ``finished``."""
        raise NotImplementedError

    def _end(self, out: list[bytes]) -> None:
        """End a stream whose input stopped; must set ``finished``."""
        raise NotImplementedError

    def _malformed(self, out: list[bytes]) -> None:
        """End the stream on a payload it could not handle (re-raise unless overridden)."""
        raise


class ChatStream(FeedLoop[P]):
    """A provider stream -> OpenAI chat chunk SSE (the parts every provider shares)."""

    def __init__(self, *, model: str, include_usage: bool) -> None:
        self._writer = ChunkWriter(model=model, include_usage=include_usage)
        self.include_usage = include_usage
        self.usage = Usage()
        self.finished = False
        self.complete = False  # the provider signalled a normal end of the stream
        self.error: dict[str, Any] | None = None

    @property
    def id(self) -> str | None:
        """The ``chat.completion.chunk`` id (``None`` until known)."""
        return self._writer.id

    def _error(self, err: Any) -> dict[str, Any]:
        """The provider's mid-stream error payload ``err`` as an OpenAI error object."""
        raise NotImplementedError

    def _fail(self, err: Any, out: list[bytes]) -> None:
        """End the stream with one error event (no ``[DONE]``)."""
        self.error = self._error(err)
        out.append(encode_sse(envelope_of(self.error)))
        self.finished = True

    def _malformed(self, out: list[bytes]) -> None:
        """End the stream with one error event: the upstream sent something unreadable."""
        if self.finished:
            return
        self.error = {"message": "Malformed chunk from upstream provider.", "type": "upstream_error",
                      "param": None, "code": "upstream_malformed"}
        out.append(encode_sse(envelope_of(self.error)))
        self.finished = True

    def _done(self, out: list[bytes]) -> None:
        """End the stream normally: the usage chunk (if asked for) and ``[DONE]``."""
        if self.include_usage:
            out.append(self._writer.usage_chunk(self.usage))
        out.append(DONE)
        self.finished = True
