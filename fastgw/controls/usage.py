"""Token usage extraction without re-parsing the fast path. Pure: no I/O, no globals.

Non-streaming: :func:`usage_from_json_body` decodes only the top-level ``usage`` member
(msgspec skips every other member without building objects).

Streaming (OpenAI chat SSE): a :class:`StreamUsageTap` sits in the relay. The relay calls
``out = tap.feed(chunk)`` for every upstream chunk and forwards ``out``, then forwards
``tap.close()`` at the end, then reads ``tap.usage``.

* ``StreamUsageTap(strip_usage_chunk=False)`` (the client asked for usage itself, or no
  usage was requested): ``feed`` returns the chunk object itself, untouched. The tap keeps
  references to the last ~64 KiB of chunks (no copy) and parses usage lazily from the last
  events when ``.usage`` is read.
* ``StreamUsageTap(strip_usage_chunk=True)`` (fastgw injected ``include_usage`` for a
  client that did not ask): the forwarded bytes are exactly the upstream bytes minus the
  usage-only event (``"choices": []`` plus a non-null ``usage``), byte for byte, for any
  chunking. Complete events go out in the same ``feed`` call that completes them. Only
  the trailing incomplete event of a chunk may be held back, and only while it could
  still be the usage event (it is released as soon as it shows non-empty ``choices`` or
  ``"usage":null``, or grows past 64 KiB); an incomplete event is not deliverable to an
  SSE client anyway, so no event is delayed. Other events with an empty ``choices`` (for
  example Azure's ``prompt_filter_results`` or OpenAI's ``moderation`` chunk) pass through.
  Caveat: recent OpenAI models also add ``"usage":null`` to every chunk when
  ``include_usage`` is set; those members stay (rewriting every chunk would defeat the
  fast path) and are harmless to clients.

Responses API streams always carry usage in the terminal ``response.completed`` (or
``.incomplete`` / ``.failed``) event: :class:`ResponsesUsageTap` observes them, zero-copy.

Which tap an answer gets: :func:`stream_usage_path` names the path (``USAGE_CLIENT`` /
``USAGE_INJECTED`` / ``USAGE_NONE`` for chat streams, ``USAGE_BODY`` for non-streams,
``USAGE_RESPONSES`` for Responses streams; counted with ``metrics.observe_usage_path``) and
:func:`usage_tap` builds the tap for it. :class:`CaptureTap` wraps a stream's tap to keep
what the client received for the audit log.
"""

from __future__ import annotations

import re
from collections import deque
from typing import Any

import msgspec

from fastgw.tokens import Usage
from fastgw.translate.anthropic import usage_of as anthropic_usage_of

USAGE_CLIENT = "client"
USAGE_INJECTED = "injected"
USAGE_NONE = "none"
USAGE_BODY = "body"
USAGE_RESPONSES = "responses"

TAIL_BYTES = 65536
HOLD_CAP = 65536
RESPONSES_CAPTURE_CAP = 16 * 1024 * 1024


class _Details(msgspec.Struct):
    cached_tokens: int | None = None
    reasoning_tokens: int | None = None


class _RawUsage(msgspec.Struct):
    # OpenAI chat
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None
    prompt_tokens_details: _Details | None = None
    completion_tokens_details: _Details | None = None
    prompt_cache_hit_tokens: int | None = None  # DeepSeek
    # OpenAI Responses / Anthropic
    input_tokens: int | None = None
    output_tokens: int | None = None
    input_tokens_details: _Details | None = None
    output_tokens_details: _Details | None = None
    cache_read_input_tokens: int | None = None
    cache_creation_input_tokens: int | None = None


class _UsageOnly(msgspec.Struct):
    usage: _RawUsage | None = None


class _ChatChunk(msgspec.Struct):
    choices: list[msgspec.Raw] | None = None
    usage: _RawUsage | None = None


class _ResponseObj(msgspec.Struct):
    usage: _RawUsage | None = None


class _ResponsesEvent(msgspec.Struct):
    response: _ResponseObj | None = None


_dec_body = msgspec.json.Decoder(_UsageOnly)
_dec_chunk = msgspec.json.Decoder(_ChatChunk)
_dec_resp = msgspec.json.Decoder(_ResponsesEvent)


def normalize(u: _RawUsage) -> Usage:
    """One provider usage object -> :class:`Usage` (OpenAI semantics: prompt includes cached)."""
    cached = reasoning = 0
    if u.prompt_tokens is not None or u.completion_tokens is not None:
        prompt = u.prompt_tokens or 0
        completion = u.completion_tokens or 0
        if u.prompt_tokens_details is not None and u.prompt_tokens_details.cached_tokens:
            cached = u.prompt_tokens_details.cached_tokens
        elif u.prompt_cache_hit_tokens:
            cached = u.prompt_cache_hit_tokens
        if u.completion_tokens_details is not None and u.completion_tokens_details.reasoning_tokens:
            reasoning = u.completion_tokens_details.reasoning_tokens
    else:
        inp = u.input_tokens or 0
        completion = u.output_tokens or 0
        if u.cache_read_input_tokens is not None or u.cache_creation_input_tokens is not None:
            # Anthropic (input_tokens excludes cache reads and writes): the one normalisation.
            return anthropic_usage_of({k: v for k, v in msgspec.structs.asdict(u).items()
                                       if v is not None and not isinstance(v, msgspec.Struct)})
        else:
            prompt = inp
            if u.input_tokens_details is not None and u.input_tokens_details.cached_tokens:
                cached = u.input_tokens_details.cached_tokens
        if u.output_tokens_details is not None and u.output_tokens_details.reasoning_tokens:
            reasoning = u.output_tokens_details.reasoning_tokens
    total = u.total_tokens if u.total_tokens is not None else prompt + completion
    return Usage(prompt, completion, total, cached, reasoning)


def usage_from_json_body(body: bytes) -> Usage | None:
    """Usage from a non-streaming JSON response body (chat, completions, embeddings,
    Responses, Anthropic messages); None when absent or the body is not JSON."""
    try:
        u = _dec_body.decode(body).usage
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    return None if u is None else normalize(u)


# -- request side -------------------------------------------------------------------



def inject_include_usage(fields: dict[str, msgspec.Raw]) -> None:
    """Set ``stream_options.include_usage = true`` in a top-level-decoded request body,
    keeping any other ``stream_options`` members as they were."""
    so: dict[str, msgspec.Raw] = {}
    raw = fields.get("stream_options")
    if raw is not None:
        try:
            so = msgspec.json.decode(raw, type=dict[str, msgspec.Raw])
        except (msgspec.DecodeError, msgspec.ValidationError):
            so = {}  # null or not an object: replace it
    so["include_usage"] = msgspec.Raw(b"true")
    fields["stream_options"] = msgspec.Raw(msgspec.json.encode(so))




# -- SSE helpers --------------------------------------------------------------------


def _event_end(data: bytes, pos: int, cr: bool) -> int:
    """Index just past the blank line ending the event that starts at ``pos``, or -1."""
    i = data.find(b"\n\n", pos)
    end = -1 if i < 0 else i + 2
    if cr:
        for pat in (b"\r\n\r\n", b"\r\r"):
            j = data.find(pat, pos, end if end >= 0 else len(data))
            if j >= 0 and (end < 0 or j + len(pat) < end):
                end = j + len(pat)
    return end


def _event_start(data: bytes, pos: int, k: int, cr: bool) -> int:
    """Start of the event holding index ``k`` (just past the last blank line in ``data[pos:k]``)."""
    best = pos
    i = data.rfind(b"\n\n", pos, k)
    if i >= 0:
        best = i + 2
    if cr:
        for pat in (b"\r\n\r\n", b"\r\r"):
            j = data.rfind(pat, pos, k)
            if j >= 0 and j + len(pat) > best:
                best = j + len(pat)
    return best


def _payload(event: bytes) -> bytes:
    """The event's data: the ``data:`` lines joined with newlines (SSE rules)."""
    parts = []
    for line in event.splitlines():
        if line.startswith(b"data:"):
            v = line[5:]
            parts.append(v[1:] if v.startswith(b" ") else v)
    return b"\n".join(parts)


def _split_events(data: bytes) -> list[bytes]:
    cr = b"\r" in data
    out = []
    pos = 0
    while pos < len(data):
        end = _event_end(data, pos, cr)
        if end < 0:
            out.append(data[pos:])
            break
        out.append(data[pos:end])
        pos = end
    return out


def _chat_usage_of(event: bytes) -> tuple[Usage | None, bool]:
    """(usage, is_usage_only) for one chat event; decodes only if the bytes mention usage."""
    if b'"usage"' not in event:
        return None, False
    try:
        c = _dec_chunk.decode(_payload(event))
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None, False
    if c.usage is None:
        return None, False
    return normalize(c.usage), not c.choices


def _choices_state(data: bytes, pos: int, end: int) -> int:
    """For ``data[pos:end]``: 1 if top-level choices is visibly non-empty, 0 if visibly
    empty, -1 if not (yet) known."""
    i = data.find(b'"choices"', pos, end)
    if i < 0:
        return -1
    j = i + 9
    for expect in (b":", b"["):
        while j < end and data[j] in b" \t\r\n":
            j += 1
        if j >= end:
            return -1
        if data[j : j + 1] != expect:
            return 1  # not a plain array: treat as "not the usage chunk"
        j += 1
    while j < end and data[j] in b" \t\r\n":
        j += 1
    if j >= end:
        return -1
    return 0 if data[j : j + 1] == b"]" else 1


class _Tail:
    """References to the last >= ``limit`` bytes of chunks (no copying)."""

    __slots__ = ("chunks", "limit", "size", "total")

    def __init__(self, limit: int) -> None:
        self.chunks: deque[bytes] = deque()
        self.size = 0
        self.limit = limit
        self.total = 0  # every byte ever added (a cancelled stream's estimate scales by it)

    def add(self, chunk: bytes) -> None:
        self.chunks.append(chunk)
        self.size += len(chunk)
        self.total += len(chunk)
        while self.size - len(self.chunks[0]) >= self.limit:
            self.size -= len(self.chunks.popleft())

    def data(self) -> bytes:
        return b"".join(self.chunks)


_EVENT_ENDS = (b"\n\n", b"\r\r", b"\r\n\r\n")
_USAGE_OBJECT = re.compile(rb'"usage"\s*:\s*\{')


class StreamUsageTap:
    """Usage tap for an OpenAI chat-completions SSE stream. See the module docstring."""

    def __init__(self, strip_usage_chunk: bool = False) -> None:
        self.strip = strip_usage_chunk
        self.stripped = 0  # usage-only events withheld from the client
        self.closed = False
        self._tail = _Tail(TAIL_BYTES)
        self._usage: Usage | None = None
        self._held = b""  # start of an incomplete event that may be the usage event
        self._passing = False  # current incomplete event was (partly) forwarded already
        self._look = b""  # last bytes of that forwarded part, to find its end
        self._cr = False

    def feed(self, chunk: bytes) -> bytes:
        """Return the bytes to forward for ``chunk`` (``chunk`` itself when unchanged)."""
        if not chunk:
            return chunk
        self._tail.add(chunk)
        if not self.strip:
            return chunk
        if (not self._passing and not self._held and chunk.endswith(_EVENT_ENDS)
                and _USAGE_OBJECT.search(chunk) is None):
            # Whole events only, none carrying a usage object: nothing here can be the
            # usage-only event (one C-speed scan, the common case of every chunk but the last).
            return chunk
        if not self._cr and b"\r" in chunk:
            self._cr = True
        out: list[bytes] = []
        if self._passing:
            look = self._look
            buf = look + chunk if look else chunk
            end = _event_end(buf, 0, self._cr)
            if end < 0:
                self._look = buf[-3:]
                return chunk
            k = max(end - len(look), 0)
            self._passing = False
            self._look = b""
            out.append(chunk[:k])
            data = chunk[k:]
        elif self._held:
            data = self._held + chunk
            self._held = b""
        else:
            data = chunk
        pos = seg = 0
        n = len(data)
        while pos < n:
            # Only an event holding a usage object can be the one to drop: jump to it.
            m = _USAGE_OBJECT.search(data, pos)
            pos = _event_start(data, pos, m.start() if m is not None else n, self._cr)
            if pos >= n:
                break
            end = _event_end(data, pos, self._cr)
            if end < 0:
                break
            if self._drop(data, pos, end):
                if pos > seg:
                    out.append(data[seg:pos])
                seg = end
            pos = end
        keep_to = n
        if pos < n:
            if self._may_be_usage(data, pos, n):
                self._held = data[pos:]
                keep_to = pos
            else:
                self._passing = True
                self._look = data[max(pos, n - 3) :]
        if not out and seg == 0 and keep_to == n and data is chunk:
            return chunk
        if seg < keep_to:
            out.append(data[seg:keep_to])
        return b"".join(out)

    def _drop(self, data: bytes, pos: int, end: int) -> bool:
        if data.find(b'"usage"', pos, end) < 0 or _choices_state(data, pos, end) == 1:
            return False
        usage, only = _chat_usage_of(data[pos:end])
        if usage is None or not only:
            return False
        self._usage = usage
        self.stripped += 1
        return True

    @staticmethod
    def _may_be_usage(data: bytes, pos: int, end: int) -> bool:
        if end - pos > HOLD_CAP:
            return False
        if data.find(b'"usage":null', pos, end) >= 0:
            return False
        return _choices_state(data, pos, end) != 1

    def seen(self) -> tuple[bytes, int]:
        """The stream's last bytes and how many it had (for an estimate when it was cut short)."""
        return self._tail.data(), self._tail.total

    def close(self) -> bytes:
        """End of stream: return any held bytes (an unterminated last event)."""
        self.closed = True
        held, self._held = self._held, b""
        if held:
            usage, only = _chat_usage_of(held)
            if usage is not None and only:
                self._usage = usage
                self.stripped += 1
                return b""
        return held

    @property
    def usage(self) -> Usage | None:
        """Usage from the stripped event, else from the last events that carry one."""
        if self._usage is None:
            for ev in reversed(_split_events(self._tail.data())):
                u, _ = _chat_usage_of(ev)
                if u is not None:
                    if self.closed:
                        self._usage = u
                    return u
        return self._usage


_TERMINAL = (b"response.completed", b"response.incomplete", b"response.failed")


class ResponsesUsageTap:
    """Usage tap for an OpenAI Responses API SSE stream; observe only, zero-copy."""

    strip = False
    stripped = 0

    def __init__(self) -> None:
        self._tail = _Tail(TAIL_BYTES)
        self._capturing = False
        self._prev = b""
        self._usage: Usage | None = None
        self.closed = False

    def feed(self, chunk: bytes) -> bytes:
        if not chunk:
            return chunk
        t = self._tail
        if self._capturing:
            t.chunks.append(chunk)
            t.size += len(chunk)
            t.total += len(chunk)
            if t.size > RESPONSES_CAPTURE_CAP:  # marker was in content, not an event
                self._capturing = False
                t.add(b"")
            return chunk
        t.add(chunk)
        probe = self._prev + chunk[:32] if self._prev else b""
        if any(m in chunk for m in _TERMINAL) or (probe and any(m in probe for m in _TERMINAL)):
            self._capturing = True
        self._prev = chunk[-20:]
        return chunk

    def close(self) -> bytes:
        self.closed = True
        return b""

    def seen(self) -> tuple[bytes, int]:
        return self._tail.data(), self._tail.total

    @property
    def usage(self) -> Usage | None:
        if self._usage is None:
            for ev in reversed(_split_events(self._tail.data())):
                if b'"usage"' not in ev:
                    continue
                try:
                    r = _dec_resp.decode(_payload(ev)).response
                except (msgspec.DecodeError, msgspec.ValidationError):
                    continue
                if r is not None and r.usage is not None:
                    u = normalize(r.usage)
                    if self.closed:
                        self._usage = u
                    return u
        return self._usage


# -- choosing the tap ---------------------------------------------------------------

BODY_TAP_LIMIT = 16 * 1024 * 1024


class BodyTap:
    """Keeps references to a non-streaming answer's chunks; decodes only ``usage`` at the end."""

    __slots__ = ("_chunks", "_size")

    def __init__(self) -> None:
        self._chunks: list[bytes] = []
        self._size = 0

    def feed(self, chunk: bytes) -> bytes:
        if self._size < BODY_TAP_LIMIT:
            self._chunks.append(chunk)
            self._size += len(chunk)
        return chunk

    def close(self) -> bytes:
        return b""

    def body(self) -> bytes:
        return self._chunks[0] if len(self._chunks) == 1 else b"".join(self._chunks)

    @property
    def usage(self) -> Usage | None:
        return usage_from_json_body(self.body()) if self._chunks else None


class CaptureTap:
    """Wraps a stream's tap to keep what the client received (audit log), up to ``cap`` bytes."""

    __slots__ = ("_cap", "_inner", "_kept", "_size")

    def __init__(self, inner: Any, cap: int) -> None:
        self._inner = inner
        self._cap = cap
        self._kept: list[bytes] = []
        self._size = 0

    def feed(self, chunk: bytes) -> bytes:
        out = self._inner.feed(chunk) if self._inner is not None else chunk
        if self._size < self._cap and out:
            self._kept.append(out)
            self._size += len(out)
        return out

    def close(self) -> bytes:
        out = self._inner.close() if self._inner is not None else b""
        if out and self._size < self._cap:
            self._kept.append(out)
        return out

    @property
    def usage(self) -> Usage | None:
        return self._inner.usage if self._inner is not None else None

    def seen(self) -> tuple[bytes, int]:
        seen = getattr(self._inner, "seen", None)
        return seen() if seen is not None else (b"", 0)

    def captured(self) -> bytes:
        return b"".join(self._kept)


def usage_tap(suffix: str, stream: bool, usage_path: str) -> Any:
    """The tap for an answer: what it must see, and whether it strips an injected usage chunk."""
    if not stream:
        return BodyTap()
    if suffix == "/responses":
        return ResponsesUsageTap()
    if usage_path == USAGE_NONE:
        return None
    return StreamUsageTap(strip_usage_chunk=usage_path == USAGE_INJECTED)


def stream_usage_path(suffix: str, stream: bool, client_asked: bool, inject: bool) -> str:
    if not stream:
        return USAGE_BODY
    if suffix == "/responses":
        return USAGE_RESPONSES
    if client_asked:
        return USAGE_CLIENT
    return USAGE_INJECTED if inject else USAGE_NONE
