"""fastgw.upstream.chunked: same bytes, same end, same errors as h11's own reader.

Each case feeds one response (head + chunked body) to two h11 client
connections, split into the same pieces: one with h11's ``ChunkedReader``, one
with :class:`BatchChunkedReader` installed after the head. The body bytes
handed on, the trailers, the final state and any protocol error must agree.
"""

from __future__ import annotations

import itertools

import h11
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastgw.upstream.chunked import BatchChunkedReader, install

HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"


def _client() -> h11.Connection:
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method="POST", target="/v1/chat/completions",
                          headers=[("host", "x"), ("content-length", "0")]))
    conn.send(h11.EndOfMessage())
    return conn


def _run(pieces: list[bytes], batch: bool, eof: bool = False) -> tuple[bytes, object]:
    """Feed ``pieces``; return (body bytes handed on, outcome)."""
    conn = _client()
    body = bytearray()
    installed = False
    for piece in [*pieces, b""] if eof else pieces:
        conn.receive_data(piece)
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                return bytes(body), ("error", type(exc))
            if batch and not installed and type(event) is h11.Response:
                install(conn)
                installed = True
                assert type(conn._reader) is BatchChunkedReader
            if event is h11.NEED_DATA or event is h11.PAUSED:
                break
            if type(event) is h11.Data:
                body += event.data
            elif type(event) is h11.EndOfMessage:
                return bytes(body), ("end", list(event.headers), conn.their_state)
            elif type(event) is h11.ConnectionClosed:
                return bytes(body), ("closed",)
    return bytes(body), ("waiting",)


def _split(wire: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(wire) + 1) for c in cuts})
    bounds = [0, *points, len(wire)]
    return [wire[a:b] for a, b in itertools.pairwise(bounds) if b > a]


def _same(wire: bytes, cuts: list[int], eof: bool = False) -> tuple[bytes, object]:
    pieces = _split(wire, cuts)
    ours = _run(pieces, batch=True, eof=eof)
    theirs = _run(pieces, batch=False, eof=eof)
    assert ours == theirs
    return ours


def _chunked(chunks: list[bytes], ext: bool = False, upper: bool = False, trailers: bytes = b"") -> bytes:
    out = bytearray()
    for c in chunks:
        size = f"{len(c):X}" if upper else f"{len(c):x}"
        out += size.encode() + (b";name=value" if ext else b"") + b"\r\n" + c + b"\r\n"
    return bytes(out + b"0\r\n" + trailers + b"\r\n")


def test_sse_stream_in_one_read_is_one_data_event() -> None:
    events = [b'data: {"n":%d}\n\n' % i for i in range(20)] + [b"data: [DONE]\n\n"]
    conn = _client()
    conn.receive_data(HEAD)
    assert type(conn.next_event()) is h11.Response
    install(conn)
    conn.receive_data(_chunked(events))
    first = conn.next_event()
    assert type(first) is h11.Data and first.data == b"".join(events)
    assert type(conn.next_event()) is h11.EndOfMessage
    assert conn.their_state is h11.DONE
    conn.start_next_cycle()  # the connection is reusable, as with h11's reader


def test_partial_chunk_is_handed_on_at_once() -> None:
    conn = _client()
    conn.receive_data(HEAD)
    conn.next_event()
    install(conn)
    conn.receive_data(b"10\r\n0123")
    event = conn.next_event()
    assert type(event) is h11.Data and event.data == b"0123"
    assert conn.next_event() is h11.NEED_DATA
    conn.receive_data(b"456789abcdef\r\n0\r\n\r\n")
    assert conn.next_event().data == b"456789abcdef"  # type: ignore[union-attr]
    assert type(conn.next_event()) is h11.EndOfMessage


def test_install_leaves_other_framings_alone() -> None:
    conn = _client()
    conn.receive_data(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
    conn.next_event()
    reader = conn._reader
    install(conn)
    assert conn._reader is reader


@pytest.mark.parametrize("wire", [
    b"zz\r\nabc\r\n0\r\n\r\n",                 # not hex
    b"3\r\nabcXY0\r\n\r\n",                     # missing CRLF after the payload
    b"3\r\nabc\r\n0x2\r\nab\r\n0\r\n\r\n",       # int() would take it, HTTP does not
    b"3\r\nabc\r\n 2\r\nab\r\n0\r\n\r\n",        # leading space
    b"3\r\nabc\r\n+2\r\nab\r\n0\r\n\r\n",
    b"3\r\nabc\r\n1_0\r\n" + b"x" * 16 + b"\r\n0\r\n\r\n",
    b"3\r\nabc\r\n" + b"1" * 21 + b"\r\n",       # over 20 hex digits
])
def test_malformed_framing_fails_like_h11_after_handing_on_what_came_before(wire: bytes) -> None:
    _body, outcome = _same(HEAD + wire, [])
    assert outcome == ("error", h11.RemoteProtocolError)
    for cuts in ([len(HEAD) + 1], [len(HEAD) + 4, len(HEAD) + 6], list(range(len(HEAD), len(HEAD) + len(wire)))):
        _same(HEAD + wire, cuts)


def test_upstream_closing_mid_body_is_an_error_like_h11() -> None:
    body, outcome = _same(HEAD + b"5\r\nhel", [], eof=True)
    assert body == b"hel" and outcome == ("error", h11.RemoteProtocolError)


chunk_lists = st.lists(st.binary(min_size=1, max_size=40), max_size=12)
trailer_sets = st.sampled_from([b"", b"x-usage: 12\r\n", b"a: 1\r\nb: two\r\n"])


@settings(max_examples=300, deadline=None)
@given(chunks=chunk_lists, ext=st.booleans(), upper=st.booleans(), trailers=trailer_sets,
       cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=12))
def test_any_split_gives_h11s_bytes_trailers_and_end(chunks: list[bytes], ext: bool, upper: bool,
                                                      trailers: bytes, cuts: list[int]) -> None:
    wire = HEAD + _chunked(chunks, ext=ext, upper=upper, trailers=trailers)
    body, outcome = _same(wire, cuts)
    assert body == b"".join(chunks)
    assert outcome[0] == "end" and outcome[2] is h11.DONE


@settings(max_examples=300, deadline=None)
@given(chunks=chunk_lists, at=st.integers(min_value=0, max_value=10_000), junk=st.binary(min_size=1, max_size=3),
       cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=8))
def test_corrupted_wire_fails_or_ends_exactly_as_h11(chunks: list[bytes], at: int, junk: bytes,
                                                      cuts: list[int]) -> None:
    body = _chunked(chunks)
    at %= len(body) + 1
    _same(HEAD + body[:at] + junk + body[at:], cuts)
    _same(HEAD + body[:at], cuts, eof=True)


def test_an_h11_without_the_expected_internals_keeps_its_own_reader(monkeypatch) -> None:
    import fastgw.upstream.chunked as chunked

    assert chunked.SUPPORTED  # the pinned h11 fits
    monkeypatch.setattr(chunked, "SUPPORTED", False)
    conn = _client()
    conn.receive_data(HEAD + _chunked([b"data: 1\n\n", b"data: 2\n\n"]))
    conn.next_event()
    assert install(conn) is None and type(conn._reader) is not BatchChunkedReader
    events = [conn.next_event() for _ in range(3)]
    assert [type(e) for e in events] == [h11.Data, h11.Data, h11.EndOfMessage]
