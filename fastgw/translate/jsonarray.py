"""Incremental splitter for a streamed top-level JSON array (pure, no I/O).

Gemini ``streamGenerateContent`` WITHOUT ``alt=sse`` answers with one JSON array
written element by element (``[{...}\\n,\\r\\n{...}]``).  :class:`JSONArrayParser`
``.feed(data)`` returns the raw bytes of each top-level element completed by
``data`` (any split, including inside strings and multi-byte characters);
``close()`` returns an element left unterminated only if it is a complete value
(never half an object).  Nesting depth is tracked outside of strings, honouring
backslash escapes; whitespace and commas between elements are skipped.
"""

from __future__ import annotations

__all__ = ["JSONArrayParser"]

_OPEN = frozenset(b"{[")
_CLOSE = frozenset(b"}]")


class JSONArrayParser:
    """Yields the raw bytes of each element of a streamed top-level JSON array."""

    __slots__ = ("_buf", "_depth", "_escape", "_in_string", "_opened", "_pos", "_start")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._pos = 0  # next byte to scan
        self._start = -1  # start of the element being scanned
        self._depth = 0  # nesting inside the current element
        self._in_string = False
        self._escape = False
        self._opened = False  # saw the outer '['

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        buf = self._buf
        out: list[bytes] = []
        i = self._pos
        n = len(buf)
        while i < n:
            c = buf[i]
            if self._in_string:
                if self._escape:
                    self._escape = False
                elif c == 0x5C:  # backslash
                    self._escape = True
                elif c == 0x22:  # quote
                    self._in_string = False
                    if self._depth == 0:
                        out.append(bytes(buf[self._start : i + 1]))
                        self._start = -1
            elif not self._opened:
                if c == 0x5B:  # '['
                    self._opened = True
            elif self._start < 0:
                if c in _OPEN:
                    self._start, self._depth = i, 1
                elif c == 0x22:
                    self._start, self._depth, self._in_string = i, 0, True
                elif c not in b" \t\r\n,]":
                    self._start, self._depth = i, 0  # scalar element
            elif c == 0x22:
                self._in_string = True
            elif c in _OPEN:
                self._depth += 1
            elif c in _CLOSE:
                if self._depth == 0:  # ']' ending a scalar element
                    out.append(bytes(buf[self._start : i]).strip())
                    self._start = -1
                else:
                    self._depth -= 1
                    if self._depth == 0:
                        out.append(bytes(buf[self._start : i + 1]))
                        self._start = -1
            elif self._depth == 0 and c in b" \t\r\n,":
                out.append(bytes(buf[self._start : i]))
                self._start = -1
            i += 1
        # drop consumed bytes
        keep = self._start if self._start >= 0 else n
        if keep:
            del buf[:keep]
            if self._start >= 0:
                self._start = 0
        self._pos = n - keep
        return out

    def close(self) -> list[bytes]:
        if self._start >= 0 and self._depth == 0 and not self._in_string:
            tail = bytes(self._buf[self._start :]).strip()
            self._buf.clear()
            self._start = -1
            return [tail] if tail else []
        return []
