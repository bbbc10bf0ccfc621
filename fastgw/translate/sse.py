"""Incremental Server-Sent Events reading and writing (pure, no I/O).

Reading -- :class:`SSEParser` implements the event-stream interpretation of the
WHATWG HTML spec ("9.2.6 Interpreting an event stream") incrementally:

* ``feed(data)`` accepts the bytes in ANY split (mid-line, mid multi-byte UTF-8
  character, between the ``\\r`` and ``\\n`` of a CRLF) and returns the events
  completed by them; ``close()`` flushes a final event that was not followed by a
  blank line (a truncated stream's last event is still delivered).
* Lines end with CRLF, LF or CR (Gemini frames events with ``\\r\\n\\r\\n``).
* A blank line dispatches the pending event, if it has at least one ``data`` line.
* Lines starting with ``:`` are comments and are ignored.
* ``field:value``; one space after the colon is removed; the rest of the value is
  kept verbatim (Anthropic pads its JSON with spaces -- JSON decoders skip them).
* Several ``data`` lines are joined with ``\\n``; ``event`` sets the event name;
  ``id`` and ``retry`` are recorded (``retry`` only if all digits) and other fields
  are ignored, as the spec requires.
* A leading UTF-8 BOM is skipped.

:class:`SSEEvent` ``.data`` is a ``str`` (decoded as UTF-8 once the event is
complete; invalid bytes become U+FFFD as the spec says), ``.event`` is the event
name or ``None`` when the stream gave none (the spec's default ``message``).

Writing -- :func:`encode_sse` frames one ``data:`` event, :func:`encode_sse_event`
a named one, and :data:`DONE` is OpenAI's end-of-stream sentinel event.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DONE", "SSEEvent", "SSEParser", "encode_sse", "encode_sse_event"]

DONE = b"data: [DONE]\n\n"


def encode_sse(data: bytes) -> bytes:
    """Frame ``data`` (which must not contain newlines, e.g. compact JSON) as one SSE event."""
    return b"data: " + data + b"\n\n"


def encode_sse_event(event: str, data: bytes) -> bytes:
    """Frame a named event: ``event: <event>\\ndata: <data>\\n\\n``."""
    return b"event: " + event.encode() + b"\ndata: " + data + b"\n\n"


@dataclass(slots=True)
class SSEEvent:
    """One dispatched event: ``event`` name (``None`` if absent), ``data`` text, last ``id``."""

    data: str
    event: str | None = None
    id: str | None = None


class SSEParser:
    """Incremental SSE parser; see the module docstring for the exact rules."""

    __slots__ = ("_buf", "_data", "_event", "_first", "_skip_lf", "last_id", "retry")

    def __init__(self) -> None:
        self._buf = b""  # bytes of an unterminated line
        self._skip_lf = False  # last chunk ended with CR: a leading LF belongs to it
        self._data: list[bytes] = []
        self._event: str | None = None
        self._first = True  # BOM check pending
        self.last_id: str | None = None
        self.retry: int | None = None

    def feed(self, data: bytes) -> list[SSEEvent]:
        """Consume ``data``; return the events it completes (possibly none)."""
        if not data:
            return []
        if self._skip_lf:
            self._skip_lf = False
            if data[:1] == b"\n":
                data = data[1:]
        if self._buf:
            data = self._buf + data
            self._buf = b""
        if self._first:
            if len(data) < 3 and b"\xef\xbb\xbf".startswith(data):
                self._buf = data
                return []
            self._first = False
            if data.startswith(b"\xef\xbb\xbf"):
                data = data[3:]
        lines = data.splitlines(keepends=True)
        if not lines:
            return []
        last = lines[-1]
        if last[-1:] not in (b"\n", b"\r"):
            self._buf = lines.pop()
        elif last[-1:] == b"\r":
            self._skip_lf = True
        out: list[SSEEvent] = []
        for raw in lines:
            self._line(raw.rstrip(b"\r\n"), out)
        return out

    def close(self) -> list[SSEEvent]:
        """End of stream: process an unterminated last line and dispatch a pending event."""
        out: list[SSEEvent] = []
        if self._buf:
            buf, self._buf = self._buf, b""
            if self._first and buf.startswith(b"\xef\xbb\xbf"):
                buf = buf[3:]
            self._line(buf, out)
        self._first = False
        self._dispatch(out)
        return out

    def _line(self, line: bytes, out: list[SSEEvent]) -> None:
        if not line:
            self._dispatch(out)
            return
        if line[0] == 0x3A:  # ':' comment
            return
        colon = line.find(b":")
        if colon < 0:
            name, value = line, b""
        else:
            name = line[:colon]
            value = line[colon + 1 :]
            if value[:1] == b" ":
                value = value[1:]
        if name == b"data":
            self._data.append(value)
        elif name == b"event":
            self._event = value.decode("utf-8", "replace")
        elif name == b"id":
            if b"\x00" not in value:
                self.last_id = value.decode("utf-8", "replace")
        elif name == b"retry" and value.isdigit():
            self.retry = int(value)

    def _dispatch(self, out: list[SSEEvent]) -> None:
        if self._data:
            data = self._data[0] if len(self._data) == 1 else b"\n".join(self._data)
            out.append(SSEEvent(data.decode("utf-8", "replace"), self._event, self.last_id))
            self._data = []
        self._event = None
