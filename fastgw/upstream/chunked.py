"""A chunked-body reader for h11 that decodes everything buffered in one pass.

h11's own ``ChunkedReader`` produces one ``Data`` event per HTTP chunk, and each
event costs a trip through h11's state machine (``next_event`` ->
``_process_event`` -> two state objects). An LLM stream is one small chunk per
SSE event, so a stream pays those trips once per event: the largest single cost of
relaying a stream.

:class:`BatchChunkedReader` speaks the same reader contract h11 uses for its
body readers (``__call__(buf) -> Data | EndOfMessage | None`` and
``read_eof()``), so h11 stays in charge of the connection: it parses the
response head, runs the state machine, enforces the receive-buffer limit, and
reads the last chunk's trailer section itself. The only difference is the
framing of ``Data``: all payload bytes of the complete and partial chunks in the
buffer come out as **one** ``Data`` event, in order, and nothing is held back
(a partial chunk's bytes are handed on as soon as they are there, like h11
does). Malformed framing raises the same ``LocalProtocolError`` h11 raises,
which h11 re-raises to the caller as ``RemoteProtocolError``.

``install`` swaps it in for h11's reader right after the response head was
read; only a fresh ``ChunkedReader`` (nothing of the body consumed) is replaced.
"""

from __future__ import annotations

from typing import NoReturn

import h11

try:
    from h11._readers import ChunkedReader, _decode_header_lines, chunk_header_re
    from h11._receivebuffer import ReceiveBuffer
except ImportError:  # pragma: no cover - an h11 that moved its internals: keep its own reader
    ChunkedReader = _decode_header_lines = chunk_header_re = ReceiveBuffer = None  # type: ignore[assignment,misc]

_CRLF = b"\r\n"
_HEX = b"0123456789abcdefABCDEF"


class BatchChunkedReader:
    """h11 body reader for ``Transfer-Encoding: chunked``; one ``Data`` per call."""

    __slots__ = ("_discard", "_left", "_trailer", "ready")

    def __init__(self) -> None:
        self._left = 0  # payload bytes still to come in the current chunk
        self._discard = b""  # the CRLF after a chunk's payload, not yet seen
        self._trailer = False  # the zero-size chunk was read: trailer section next
        # False after a call that left nothing it could act on without more bytes:
        # calling again before new bytes arrive would only return None (NEED_DATA).
        self.ready = True

    def __call__(self, buf: ReceiveBuffer) -> h11.Data | h11.EndOfMessage | None:
        if self._trailer:
            return self._read_trailer(buf)
        data = buf._data
        end = len(data)
        pos = 0
        out: list[bytearray] = []
        while pos < end:
            if self._discard:
                piece = data[pos : pos + len(self._discard)]
                if piece != self._discard[: len(piece)]:
                    if out:
                        self.ready = True
                        return self._consumed(buf, pos, out)  # the next call raises
                    raise h11.LocalProtocolError(
                        f"malformed chunk footer: {bytes(piece)!r} (expected {self._discard!r})")
                pos += len(piece)
                self._discard = self._discard[len(piece):]
                continue
            if self._left == 0:
                eol = data.find(_CRLF, pos)
                if eol == -1:
                    break  # an incomplete chunk header: wait for more bytes
                size_field = data[pos:eol]
                if 0 < len(size_field) <= 20 and not size_field.strip(_HEX):
                    size = int(size_field, 16)  # the usual header: hex digits only
                else:
                    line = data[pos : eol + 2]
                    match = chunk_header_re.fullmatch(line)
                    if match is None:
                        if out:
                            self.ready = True
                            return self._consumed(buf, pos, out)  # the next call raises
                        raise h11.LocalProtocolError(f"illegal chunk header: {bytes(line)!r}")
                    size = int(match["chunk_size"], base=16)
                pos = eol + 2
                if size == 0:
                    self._trailer = True
                    break
                self._left = size
            take = min(self._left, end - pos)
            if not take:
                break  # the header came; its payload has not yet
            out.append(data[pos : pos + take])
            pos += take
            self._left -= take
            if self._left == 0:
                if data[pos : pos + 2] == _CRLF:
                    pos += 2
                else:
                    self._discard = _CRLF
        self.ready = self._trailer
        return self._consumed(buf, pos, out)

    def _consumed(self, buf: ReceiveBuffer, pos: int, out: list[bytearray]) -> h11.Data | h11.EndOfMessage | None:
        if pos:
            del buf._data[:pos]
            buf._next_line_search = 0
            buf._multiple_lines_search = 0
        if out:
            return h11.Data(data=b"".join(out))
        if self._trailer:
            return self._read_trailer(buf)
        return None

    @staticmethod
    def _read_trailer(buf: ReceiveBuffer) -> h11.EndOfMessage | None:
        lines = buf.maybe_extract_lines()
        if lines is None:
            return None
        return h11.EndOfMessage(headers=list(_decode_header_lines(lines)))

    def read_eof(self) -> NoReturn:
        raise h11.RemoteProtocolError(
            "peer closed connection without sending complete message body (incomplete chunked read)")


def _h11_fits() -> bool:
    """Whether this h11 has the internals the reader relies on (its version is >= 0.16,
    unpinned for users: a later release may move them, and then h11's reader is kept)."""
    if ReceiveBuffer is None:
        return False
    buf = ReceiveBuffer()
    reader = ChunkedReader()
    return (isinstance(getattr(buf, "_data", None), bytearray)
            and all(hasattr(buf, a) for a in ("_next_line_search", "_multiple_lines_search", "maybe_extract_lines"))
            and all(hasattr(reader, a) for a in ("_bytes_in_chunk", "_bytes_to_discard", "_reading_trailer"))
            and hasattr(h11.Connection(h11.CLIENT), "_reader"))


SUPPORTED = _h11_fits()


def install(conn: h11.Connection) -> BatchChunkedReader | None:
    """Use :class:`BatchChunkedReader` for the response body h11 is about to read.

    Call right after ``next_event()`` returned the ``Response``; returns the
    reader, or None (nothing changed) unless h11 chose its chunked reader for
    this body and has read none of it yet.
    """
    if not SUPPORTED:
        return None
    reader = conn._reader
    if type(reader) is ChunkedReader and reader._bytes_in_chunk == 0 and not reader._bytes_to_discard \
            and not reader._reading_trailer:
        batch = BatchChunkedReader()
        conn._reader = batch
        return batch
    return None
