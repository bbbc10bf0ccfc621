"""Token usage of an Anthropic Messages stream relayed byte for byte, without decoding the rest.

:class:`MessagesUsageTap` sits in the relay like :class:`fastgw.controls.usage.StreamUsageTap`:
``feed(chunk)`` returns the chunk object itself (nothing is copied or changed) and keeps
references to the stream's first event (``message_start``, which carries the input and cache
counts) and to its last ~64 KiB (where ``message_delta`` carries the cumulative output count,
and on newer API versions the final input and cache counts too).  ``usage`` decodes only those
two events' ``usage`` members, once, when accounting reads it: counts in ``message_delta``
override those of ``message_start``.  Cache reads and writes are counted as Anthropic reports
them (:func:`fastgw.controls.usage.normalize`: prompt tokens include both).
"""

from __future__ import annotations

import msgspec

from fastgw.controls.usage import TAIL_BYTES, Usage, _payload, _RawUsage, _split_events, _Tail, normalize

__all__ = ["MessagesUsageTap"]

HEAD_CAP = 65536


class _Message(msgspec.Struct):
    usage: _RawUsage | None = None


class _Event(msgspec.Struct):
    type: str = ""
    message: _Message | None = None
    usage: _RawUsage | None = None


_decode_event = msgspec.json.Decoder(_Event).decode
_FIELDS = _RawUsage.__struct_fields__


def _events(data: bytes, kind: bytes) -> list[_Event]:
    out = []
    for ev in _split_events(data):
        if kind not in ev or b'"usage"' not in ev:
            continue
        try:
            out.append(_decode_event(_payload(ev)))
        except (msgspec.DecodeError, msgspec.ValidationError):
            continue
    return out


class MessagesUsageTap:
    """Usage tap for an Anthropic Messages SSE stream; observe only, zero-copy."""

    strip = False
    stripped = 0

    def __init__(self) -> None:
        self._head: list[bytes] = []
        self._head_size = 0
        self._head_done = False
        self._tail = _Tail(TAIL_BYTES)
        self._usage: Usage | None = None
        self.closed = False

    def feed(self, chunk: bytes) -> bytes:
        if not chunk:
            return chunk
        if not self._head_done:
            self._head.append(chunk)
            self._head_size += len(chunk)
            # message_start is the first event: the head is complete once an event ended.
            self._head_done = self._head_size >= HEAD_CAP or b"\n\n" in chunk or b"\r\n\r\n" in chunk
        self._tail.add(chunk)
        return chunk

    def close(self) -> bytes:
        self.closed = True
        return b""

    @property
    def usage(self) -> Usage | None:
        if self._usage is not None:
            return self._usage
        merged: _RawUsage | None = None
        for ev in _events(b"".join(self._head), b"message_start"):
            if ev.type == "message_start" and ev.message is not None and ev.message.usage is not None:
                merged = ev.message.usage
                break
        for ev in reversed(_events(self._tail.data(), b"message_delta")):
            if ev.type == "message_delta" and ev.usage is not None:
                if merged is None:
                    merged = ev.usage
                else:
                    for name in _FIELDS:
                        value = getattr(ev.usage, name)
                        if value is not None:
                            setattr(merged, name, value)
                break
        if merged is None:
            return None
        usage = normalize(merged)
        if self.closed:
            self._usage = usage
        return usage
