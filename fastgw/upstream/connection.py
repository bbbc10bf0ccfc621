"""httpcore's HTTP/1.1 connection, trimmed for a connection the pool owns exclusively.

:class:`HTTP11Connection` is ``httpcore.AsyncHTTP11Connection`` (same h11 state
machine, same state and expiry bookkeeping, so the pool's ``is_available`` /
``has_expired`` checks are httpcore's own) with a leaner hot path:

* no state lock: the :mod:`~fastgw.upstream.pool` hands a connection to one
  request at a time, so the anyio lock httpcore takes twice per request guards
  nothing here;
* no trace hooks (they cost an async context manager per step);
* the request head and a bytes body leave in one write (one syscall, not three);
* a provider's fixed headers are validated by h11 once (:func:`prevalidate`),
  not on every request;
* the body is read by :meth:`next_chunk`, a plain coroutine, instead of three
  nested async generators, and everything one socket read brought is handed
  on in one piece (one ASGI send, not one per HTTP chunk);
* a chunked body is decoded by :mod:`~fastgw.upstream.chunked` (one h11
  ``Data`` event per read instead of one per HTTP chunk).

A response not read to its end (``EndOfMessage``) leaves the connection closed
by :meth:`finish`, never reused.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterable

import h11
import httpcore
from h11._headers import Headers, normalize_and_validate
from httpcore._async.http11 import HTTPConnectionState

from fastgw.upstream.backend import AsyncioStream
from fastgw.upstream.chunked import BatchChunkedReader
from fastgw.upstream.chunked import install as install_batch_reader

READ_SIZE = 64 * 1024
_NEED_DATA = h11.NEED_DATA
_PAUSED = h11.PAUSED
_Data = h11.Data
_EndOfMessage = h11.EndOfMessage
_IDLE = HTTPConnectionState.IDLE
_NEW = HTTPConnectionState.NEW
_ACTIVE = HTTPConnectionState.ACTIVE
_CLOSED = HTTPConnectionState.CLOSED


HeaderItems = list[tuple[bytes, bytes, bytes]]


def prevalidate(headers: list[tuple[bytes, bytes]]) -> HeaderItems:
    """Headers checked and normalised by h11 once (e.g. a provider's fixed headers).

    Raises ``ValueError`` naming the bad header (never its value: it may be a key).
    """
    try:
        return list(normalize_and_validate(headers)._full_items)
    except h11.LocalProtocolError:
        for name, value in headers:
            try:
                normalize_and_validate([(name, value)])
            except h11.LocalProtocolError:
                raise ValueError(f"header {name.decode('latin-1')!r} has an illegal name or value") from None
        raise


def with_content_length(items: HeaderItems, length: int) -> Headers:
    """Prevalidated headers plus a Content-Length: h11 takes them without re-checking."""
    return Headers([*items, (b"content-length", b"content-length", str(length).encode())])


class HTTP11Connection(httpcore.AsyncHTTP11Connection):
    _network_stream: AsyncioStream
    # The last next_chunk() also consumed the body's end: the next call returns None.
    _body_done = False
    # The chunked body's reader (fastgw.upstream.chunked), when it was installed.
    _batch: BatchChunkedReader | None = None

    async def start(
        self,
        method: bytes,
        target: bytes,
        headers: list[tuple[bytes, bytes]] | Headers,
        body: bytes | AsyncIterable[bytes],
    ) -> tuple[int, list[tuple[bytes, bytes]]]:
        r"""Send a request; return the response status and headers.

        ``headers`` is a list (checked by h11 here) or h11 ``Headers`` built by
        :func:`with_content_length` from :func:`prevalidate`\ d items.

        Raises httpcore's ``ReadTimeout``/``ReadError``/``WriteError``/
        ``RemoteProtocolError``/``LocalProtocolError``; on any failure the
        connection is closed.
        """
        if self._state is not _IDLE and self._state is not _NEW:
            raise httpcore.ConnectionNotAvailable()
        self._request_count += 1
        self._body_done = False
        self._batch = None
        self._state = _ACTIVE
        self._expire_at = None
        h = self._h11_state
        stream = self._network_stream
        try:
            try:
                head = h.send(h11.Request(method=method, target=target, headers=headers))
                if isinstance(body, bytes):
                    out = head + h.send(_Data(data=body)) if body else head  # type: ignore[operator]
                    await stream.write(out + h.send(_EndOfMessage()))  # type: ignore[operator]
                else:
                    await stream.write(head)  # type: ignore[arg-type]
                    async for chunk in body:
                        await stream.write(h.send(_Data(data=chunk)))  # type: ignore[arg-type]
                    await stream.write(h.send(_EndOfMessage()))  # type: ignore[arg-type]
            except h11.LocalProtocolError as exc:
                raise httpcore.LocalProtocolError(str(exc)) from None
            except httpcore.WriteError:
                # The server may have answered early and closed: read its answer.
                pass
            while True:
                event = await self._next_event()
                if type(event) is h11.Response:
                    self._batch = install_batch_reader(h)
                    # Lowercased names (h11 normalised them), as ASGI wants them.
                    return event.status_code, response_headers(event.headers)
        except BaseException:
            self.finish()
            raise

    async def _next_event(self) -> h11.Event | type[h11.PAUSED]:
        h = self._h11_state
        while True:
            try:
                event = h.next_event()
            except h11.RemoteProtocolError as exc:
                raise httpcore.RemoteProtocolError(str(exc)) from None
            if event is not _NEED_DATA:
                return event  # type: ignore[return-value]
            data = await self._network_stream.read(READ_SIZE)
            if not data and h.their_state is h11.SEND_RESPONSE:
                raise httpcore.RemoteProtocolError("Server disconnected without sending a response.")
            h.receive_data(data)

    async def next_chunk(self) -> bytes | None:
        """The body bytes that have arrived, as soon as any have; None at the body's end.

        It waits only while nothing is there. What one socket read brought (for
        example several SSE events the upstream wrote together) is returned at
        once, in order: nothing is held back for later bytes, and nothing that
        arrived is kept waiting.
        """
        h = self._h11_state
        if self._body_done:
            self._body_done = False
            return None
        batch = self._batch
        try:
            if batch is not None and not batch.ready:
                # The chunked reader consumed all it could: only new bytes can help.
                h.receive_data(await self._network_stream.read(READ_SIZE))
            while True:
                event = h.next_event()
                if event is _NEED_DATA:
                    h.receive_data(await self._network_stream.read(READ_SIZE))
                    continue
                if type(event) is not _Data:
                    return None  # EndOfMessage (or PAUSED after it)
                data: bytes = event.data  # type: ignore[union-attr]
                if batch is not None and not batch.ready:
                    return data  # one event held everything that had arrived
                parts: list[bytes] | None = None
                while True:
                    try:
                        event = h.next_event()
                    except h11.RemoteProtocolError:
                        break  # hand on what arrived; the error is raised by the next call
                    if event is _NEED_DATA:
                        break
                    if type(event) is not _Data:
                        self._body_done = True
                        break
                    if parts is None:
                        parts = [data]
                    parts.append(event.data)  # type: ignore[union-attr]
                return data if parts is None else b"".join(parts)
        except h11.RemoteProtocolError as exc:
            raise httpcore.RemoteProtocolError(str(exc)) from None

    def finish(self) -> None:
        """The response is done with: idle for reuse if both sides completed, else closed."""
        h = self._h11_state
        if self._state is _ACTIVE and h.our_state is h11.DONE and h.their_state is h11.DONE:
            self._state = _IDLE
            h.start_next_cycle()
            if self._keepalive_expiry is not None:
                self._expire_at = time.monotonic() + self._keepalive_expiry
        elif self._state is not _CLOSED:
            self._state = _CLOSED
            self._network_stream.close()


def response_headers(headers: Headers) -> list[tuple[bytes, bytes]]:
    """h11's parsed headers as ``(lowercased name, value)`` pairs. Read from the list h11
    keeps (``_full_items``: raw name, name, value) rather than through its ``Sequence``
    interface, which costs a Python ``__getitem__`` call per header; h11's public iteration
    is the fallback should that attribute go."""
    items = getattr(headers, "_full_items", None)
    if type(items) is list:
        return [(name, value) for _, name, value in items]
    return list(headers)
