"""SSEParser and JSONArrayParser: framing rules and split invariance."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from fastgw.translate.jsonarray import JSONArrayParser
from fastgw.translate.sse import DONE, SSEEvent, SSEParser, encode_sse, encode_sse_event


def parse(data: bytes, splits: list[int] | None = None) -> list[SSEEvent]:
    p = SSEParser()
    out: list[SSEEvent] = []
    cuts = sorted(set(splits or []))
    prev = 0
    for c in [*cuts, len(data)]:
        out += p.feed(data[prev:c])
        prev = c
    return out + p.close()


def test_basic_events_and_names() -> None:
    evs = parse(b"event: a\ndata: 1\n\ndata: 2\n\n")
    assert [(e.event, e.data) for e in evs] == [("a", "1"), (None, "2")]


def test_line_endings_crlf_cr_lf() -> None:
    for sep in (b"\n", b"\r\n", b"\r"):
        data = b"event: x" + sep + b"data: hello" + sep + sep + b"data: b" + sep + sep
        assert [(e.event, e.data) for e in parse(data)] == [("x", "hello"), (None, "b")]


def test_multiline_data_comments_and_padding() -> None:
    data = b": keep-alive\ndata: one\ndata:two\ndata:  three  \nid: 7\nretry: 15\nfoo: bar\n\n"
    (ev,) = parse(data)
    assert ev.data == "one\ntwo\n three  "
    assert ev.id == "7"


def test_retry_and_field_without_colon() -> None:
    p = SSEParser()
    assert p.feed(b"retry: 3000\ndata\n\n") == [SSEEvent("")]
    assert p.retry == 3000
    assert p.feed(b"retry: soon\n") == [] and p.retry == 3000


def test_event_without_data_is_not_dispatched() -> None:
    assert parse(b"event: ping\n\n\n\n") == []


def test_close_flushes_unterminated_event() -> None:
    p = SSEParser()
    assert p.feed(b"data: tail") == []
    assert [e.data for e in p.close()] == ["tail"]
    p = SSEParser()
    assert p.feed(b"data: tail\n") == []
    assert [e.data for e in p.close()] == ["tail"]


def test_split_crlf_and_utf8() -> None:
    data = "data: héllo — 世界\r\n\r\n".encode()
    for i in range(len(data) + 1):
        assert [e.data for e in parse(data, [i])] == ["héllo — 世界"]


def test_bom_is_skipped() -> None:
    data = b"\xef\xbb\xbfdata: x\n\n"
    for i in range(4):
        assert [e.data for e in parse(data, [i])] == ["x"]


def test_encoders() -> None:
    assert encode_sse(b'{"a":1}') == b'data: {"a":1}\n\n'
    assert encode_sse_event("response.created", b"{}") == b"event: response.created\ndata: {}\n\n"
    assert DONE == b"data: [DONE]\n\n"
    assert [e.data for e in parse(encode_sse(b"x") + DONE)] == ["x", "[DONE]"]


_value = st.text(
    alphabet=st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)), max_size=20
)
_event = st.tuples(
    st.one_of(st.none(), st.sampled_from(["message_start", "ping", "x"])),
    st.lists(_value, min_size=1, max_size=3),
)


@settings(max_examples=150, deadline=None)
@given(
    events=st.lists(_event, min_size=1, max_size=6),
    eol=st.sampled_from(["\n", "\r\n", "\r"]),
    data=st.data(),
)
def test_any_split_any_eol(events: list[tuple[str | None, list[str]]], eol: str, data: st.DataObject) -> None:
    text = ""
    for name, lines in events:
        if name:
            text += f"event: {name}{eol}"
        text += ": comment" + eol
        text += "".join(f"data: {line}{eol}" for line in lines)
        text += eol
    raw = text.encode()
    splits = data.draw(st.lists(st.integers(0, len(raw)), max_size=8))
    got = [(e.event, e.data) for e in parse(raw, splits)]
    assert got == [(name, "\n".join(lines)) for name, lines in events]


def arr(data: bytes, splits: list[int]) -> list[bytes]:
    p = JSONArrayParser()
    out: list[bytes] = []
    prev = 0
    for c in [*sorted(set(splits)), len(data)]:
        out += p.feed(data[prev:c])
        prev = c
    return out + p.close()


def test_json_array_gemini_framing() -> None:
    data = b'[{"a": "x]}\\"{"}\n,\r\n{"b": [1, {"c": 2}]}\n]'
    assert [json.loads(x) for x in arr(data, [])] == [{"a": 'x]}"{'}, {"b": [1, {"c": 2}]}]


def test_json_array_scalars() -> None:
    assert [json.loads(x) for x in arr(b'[1, "two", true, null, 2.5]', [])] == [1, "two", True, None, 2.5]


@settings(max_examples=100, deadline=None)
@given(
    values=st.lists(
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=8),
            lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
            max_leaves=8,
        ),
        max_size=5,
    ),
    data=st.data(),
)
def test_json_array_any_split(values: list[object], data: st.DataObject) -> None:
    raw = ("[" + "\n,\r\n".join(json.dumps(v, ensure_ascii=False) for v in values) + "]").encode()
    splits = data.draw(st.lists(st.integers(0, len(raw)), max_size=6))
    assert [json.loads(x) for x in arr(raw, splits)] == values
